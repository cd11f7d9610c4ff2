"""The harness as one namespace, for the standalone scripts (allow_path.py,
keys.py) that address it as `B.name`."""

from .callgrind import *  # noqa: F401,F403
from .common import *  # noqa: F401,F403
from .configs import *  # noqa: F401,F403
from .envoy import *  # noqa: F401,F403
from .plan import *  # noqa: F401,F403
