"""KServe model servers and the Open Inference Protocol client.

The KServe and PyTorch parts are optional extras (``agentfn[kserve]``, ``agentfn[torch]``);
:func:`import_optional` loads them with an error that names the extra to install.
"""

from agentfn.inference._optional import EXTRAS, MissingExtraError, import_optional

__all__ = ["EXTRAS", "MissingExtraError", "import_optional"]
