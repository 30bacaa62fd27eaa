from fmnist_tf.cli import main

raise SystemExit(main())
