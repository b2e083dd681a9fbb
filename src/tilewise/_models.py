"""How a model reaches the process that runs it: the object itself, a TorchScript or torch.export
file, or a picklable factory that builds it (and loads a state dict safely).

Model files are loaded with loaders that do not unpickle arbitrary Python objects: TorchScript
archives (``torch.jit.load``), exported programs (``torch.export.load``), and state dicts with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, Any

import torch

from tilewise._errors import ParameterError, ParameterTypeError, message

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["ModelFactory", "load_model", "resolve_model"]


class ModelFactory:
    """A picklable recipe for a model: ``fn(*args, **kwargs)``, then optionally a state dict.

    Workers build the model once each (not once per task). ``fn`` must be importable by the
    workers (a module-level function or class, not a lambda).

    Parameters
    ----------
    fn
        Builds the network, e.g. a ``torch.nn.Module`` subclass.
    state_dict
        Path of weights saved with ``torch.save(model.state_dict(), path)``; loaded with
        ``weights_only=True``, so no arbitrary objects are unpickled.

    Examples
    --------
    >>> import torch, tilewise as tw
    >>> f = tw.ModelFactory(torch.nn.Conv2d, 1, 2, 3, padding=1)
    >>> type(f()).__name__
    'Conv2d'
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *args: Any,
        state_dict: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> None:
        if not callable(fn):
            raise ParameterTypeError(
                message(
                    "ModelFactory",
                    expected="a callable that builds the model",
                    received=type(fn).__name__,
                    fix="pass the model class or a module-level builder function",
                )
            )
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.state_dict = os.fspath(state_dict) if state_dict is not None else None

    def __call__(self) -> Any:
        model = self.fn(*self.args, **self.kwargs)
        if self.state_dict is not None:
            weights = torch.load(self.state_dict, map_location="cpu", weights_only=True)
            model.load_state_dict(weights)
        if isinstance(model, torch.nn.Module):
            model.eval()
        return model

    def __repr__(self) -> str:
        name = getattr(self.fn, "__qualname__", repr(self.fn))
        return f"ModelFactory({name}, state_dict={self.state_dict!r})"


def load_model(path: str | os.PathLike[str]) -> Any:
    """Load a torch.export (``.pt2``) or TorchScript (``torch.jit.save``) model file.

    Export with a dynamic batch axis so any batch size runs:

    >>> import os, tempfile, torch, tilewise as tw
    >>> p = os.path.join(tempfile.mkdtemp(), "net.pt2")
    >>> net = torch.nn.Conv2d(1, 2, 3, padding=1)
    >>> batch = torch.export.Dim("batch")
    >>> ep = torch.export.export(net, (torch.ones(2, 1, 8, 8),), dynamic_shapes=({0: batch},))
    >>> torch.export.save(ep, p)
    >>> tw.load_model(p)(torch.ones(3, 1, 8, 8)).shape
    torch.Size([3, 2, 8, 8])
    """
    p = os.fspath(path)
    if not os.path.exists(p):
        raise ParameterError(
            message(
                "model",
                expected="an existing TorchScript (.pt) or torch.export (.pt2) file",
                received=repr(p),
                fix="save the model with torch.jit.save(torch.jit.script(net), path) or "
                "torch.export.save(torch.export.export(net, args), path)",
            )
        )
    if p.endswith(".pt2"):
        return torch.export.load(p).module()
    try:
        with warnings.catch_warnings():  # TorchScript is deprecated in torch, still supported here
            warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
            model = torch.jit.load(p, map_location="cpu")  # type: ignore[no-untyped-call]
    except RuntimeError as err:
        raise ParameterError(
            message(
                "model",
                expected="a TorchScript archive (torch.jit.save) or a .pt2 exported program",
                received=f"{p!r}, which torch.jit.load cannot read ({str(err).splitlines()[0]})",
                fix="a state dict needs its network: use tw.ModelFactory(Net, state_dict=path)",
            )
        ) from None
    return model.eval()


def resolve_model(model: Any) -> Callable[..., Any]:
    """The callable model behind a model, a path, or a :class:`ModelFactory`."""
    if isinstance(model, str | os.PathLike):
        return load_model(model)  # type: ignore[no-any-return]
    if isinstance(model, ModelFactory):
        return model()  # type: ignore[no-any-return]
    if not callable(model):
        raise ParameterTypeError(
            message(
                "model",
                expected="a callable (e.g. a torch.nn.Module), a model file path, or a "
                "tw.ModelFactory",
                received=type(model).__name__,
                fix="pass the network",
            )
        )
    return model  # type: ignore[no-any-return]
