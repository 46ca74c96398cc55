"""No network at run time: the settings that stop dependencies from phoning home, applied when any package of the
toolkit is imported, before the dependencies are. Each is a default: a variable already set in the environment wins.

- albumentations asks the package registry for a newer version when it is imported (``NO_ALBUMENTATIONS_UPDATE``);
  on an offline cluster that is a stall of up to its timeout in every loader worker, elsewhere a leak;
- Ray reports usage statistics from clusters it starts (``RAY_USAGE_STATS_ENABLED``), and the processes of a local
  cluster inherit this environment;
- the Hugging Face libraries work offline, without telemetry (``HF_HUB_OFFLINE``, ``HF_HUB_DISABLE_TELEMETRY``):
  the toolkit loads weights and tokenizers from local paths only.

``tests/test_offline.py`` imports every module and runs a small job with internet sockets blocked.
"""

import os

DEFAULTS = {
    "NO_ALBUMENTATIONS_UPDATE": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}

for _name, _value in DEFAULTS.items():
    os.environ.setdefault(_name, _value)
