"""``python -m mdp_zmq`` runs the ``mdp`` command."""

import sys

from .cli import main

sys.exit(main())
