"""Realtime inference on video files and webcams: one loop, modes as plug-ins."""

from fmnist_tf.realtime.loop import RealtimeReport, run_realtime
from fmnist_tf.realtime.modes import MODES, create_mode, register_mode
from fmnist_tf.realtime.video import FrameSource, VideoSink

__all__ = ["MODES", "FrameSource", "RealtimeReport", "VideoSink", "create_mode", "register_mode", "run_realtime"]
