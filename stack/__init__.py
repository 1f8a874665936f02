"""tapstack: a userspace IPv6/IPv4 network stack on Linux TAP interfaces.

``from stack import Stack, load_config`` gives the asyncio facade (``stack.api.facade``)
and the configuration loader; both are imported on first use, so ``import stack.core``
stays free of asyncio and the control layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stack.api.facade import Stack
    from stack.control.config import ConfigError, StackConfig, load_config

__all__ = ["ConfigError", "Stack", "StackConfig", "load_config"]


def __getattr__(name: str) -> Any:
    if name == "Stack":
        from stack.api.facade import Stack
        return Stack
    if name in ("load_config", "StackConfig", "ConfigError"):
        from stack.control import config
        return getattr(config, name)
    raise AttributeError(f"module 'stack' has no attribute {name!r}")
