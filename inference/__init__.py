"""Inference, where it begins: loading the optional heavy dependencies.

Today this package holds :func:`import_optional` only: the KServe and PyTorch parts are
optional extras (``agentfn[kserve]``, ``agentfn[torch]``), and it loads them with an error that
names the extra to install. Model servers and an Open Inference Protocol client are not here yet.
"""

from agentfn.inference._optional import EXTRAS, MissingExtraError, import_optional

__all__ = ["EXTRAS", "MissingExtraError", "import_optional"]
