"""The test suite, as a package.

Every test folder has an `__init__.py` so that pytest's default "prepend" import mode
names a file by its path (`tests.unit.router.test_app`, `tests.unit.shard.test_settings`):
without them two `test_settings.py` in different folders would clash as one module.
"""
