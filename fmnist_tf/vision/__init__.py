"""Image preprocessing shared by predict and (later) realtime, CAM and detection."""
