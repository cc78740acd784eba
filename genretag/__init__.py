"""genretag: streaming music genre tagging (catalog → Kafka → worker → Redis).

One import namespace, in layers that import downwards only (``pyproject.toml``'s import-linter
contracts): ``genretag.cli`` > the services ``genretag.producer`` | ``genretag.worker`` |
``genretag.training`` > the shared library ``genretag.core`` > the contracts
``genretag.schemas``. This module itself imports nothing.
"""

__version__ = "0.1.0"
