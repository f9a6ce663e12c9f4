import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=int(os.environ.get("LSM_HYPOTHESIS_EXAMPLES", "25")), deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "long", max_examples=int(os.environ.get("LSM_HYPOTHESIS_EXAMPLES", "500")), deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("LSM_HYPOTHESIS_PROFILE", "ci"))

TINY = dict(
    memtable_size=2048,
    block_size=64,
    target_file_size=2048,
    l0_compaction_trigger=2,
    l0_slowdown_trigger=4,
    l0_stop_trigger=8,
    max_bytes_for_level_base=8192,
    level_multiplier=2,
    num_levels=4,
)
"""Options under which flush and compaction happen constantly."""
