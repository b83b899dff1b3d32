"""A stand-in GPU array module for tests: NumPy underneath, but like CuPy it
refuses implicit conversion to NumPy arrays.

``StrictArray`` sets ``__array_ufunc__ = None`` and raises in ``__array__``
and ``__array_function__``, so a stray ``np.exp(x)`` or ``np.asarray(x)`` on
one of its arrays fails loudly, as it would with a CuPy array. Code that
takes its module from ``npvae.backend`` (``xp.exp(x)``) works unchanged.
"""

import types

import numpy as np


def _unwrap(v):
    if isinstance(v, StrictArray):
        return v.a
    if isinstance(v, (list, tuple)):
        return type(v)(_unwrap(u) for u in v)
    return v


def _refuse_host_arrays(args):
    """Raise TypeError, as CuPy does, where a NumPy array meets a device array."""
    for v in args:
        if isinstance(v, (list, tuple)):
            _refuse_host_arrays(v)
        elif isinstance(v, np.ndarray):
            raise TypeError("a NumPy array mixed with StrictArrays (CuPy refuses this: "
                            "move it with xp.asarray first)")


def _wrap(v):
    return StrictArray(v) if isinstance(v, np.ndarray) or isinstance(v, np.generic) else v


class StrictArray:
    __array_ufunc__ = None  # numpy ufuncs on this type raise TypeError

    def __init__(self, a):
        self.a = np.asarray(a)

    def __array__(self, *args, **kwargs):
        raise TypeError("implicit conversion of a StrictArray to a NumPy array is not allowed "
                        "(use npvae.backend.to_numpy)")

    def __array_function__(self, func, types, args, kwargs):
        raise TypeError(f"numpy.{func.__name__} called on a StrictArray: use the backend's xp")

    shape = property(lambda self: self.a.shape)
    dtype = property(lambda self: self.a.dtype)
    ndim = property(lambda self: self.a.ndim)
    size = property(lambda self: self.a.size)
    T = property(lambda self: StrictArray(self.a.T))

    def __len__(self):
        return len(self.a)

    def __float__(self):
        return float(self.a)

    def __int__(self):  # (CuPy's 0-d arrays convert, as NumPy's)
        return int(self.a)

    def __bool__(self):
        return bool(self.a)

    def __repr__(self):
        return f"StrictArray({self.a!r})"

    def __getitem__(self, key):
        return _wrap(self.a[_unwrap(key)])

    def __setitem__(self, key, value):
        self.a[_unwrap(key)] = _unwrap(value)

    def _method(name):
        def method(self, *args, **kwargs):
            kwargs = {k: _unwrap(v) for k, v in kwargs.items()}
            return _wrap(getattr(self.a, name)(*_unwrap(args), **kwargs))
        return method

    for _name in ("reshape", "transpose", "ravel", "sum", "mean", "astype", "copy", "max", "min", "var", "all", "any",
                  "argmin"):
        locals()[_name] = _method(_name)

    def _binary(name):
        def op(self, other):
            _refuse_host_arrays([other])
            return _wrap(getattr(self.a, name)(_unwrap(other)))
        return op

    for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__",
                  "__truediv__", "__rtruediv__", "__pow__", "__matmul__", "__rmatmul__",
                  "__gt__", "__lt__", "__ge__", "__le__", "__eq__", "__ne__", "__and__", "__or__"):
        locals()[_name] = _binary(_name)

    def _inplace(name):
        def op(self, other):
            _refuse_host_arrays([other])
            getattr(self.a, name)(_unwrap(other))
            return self
        return op

    for _name in ("__iadd__", "__isub__", "__imul__", "__itruediv__"):
        locals()[_name] = _inplace(_name)

    def __neg__(self):
        return StrictArray(-self.a)

    def __abs__(self):
        return StrictArray(np.abs(self.a))

    del _method, _binary, _inplace, _name


HOST_INPUTS = ("asarray", "ascontiguousarray")   # the functions that take NumPy arrays, as CuPy's


def _function(name):
    def f(*args, **kwargs):
        if name not in HOST_INPUTS:
            _refuse_host_arrays([*args, *kwargs.values()])
        kwargs = {k: _unwrap(v) for k, v in kwargs.items()}
        return _wrap(getattr(np, name)(*_unwrap(args), **kwargs))
    f.__name__ = name
    return f


class _Generator:
    """A seeded generator whose draws are StrictArrays (like cupy.random)."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def standard_normal(self, size=None, dtype=np.float64):
        return StrictArray(self.rng.standard_normal(size, dtype=dtype))

    def random(self, size=None, dtype=np.float64):
        return StrictArray(self.rng.random(size, dtype=dtype))

    def permutation(self, n):
        return StrictArray(self.rng.permutation(n))


def make_module():
    xp = types.ModuleType("strict_xp")
    for name in ("matmul", "exp", "expm1", "log", "log1p", "tanh", "sqrt", "abs", "maximum",
                 "minimum", "where", "multiply", "divide", "add", "subtract", "concatenate",
                 "zeros", "zeros_like", "empty", "empty_like", "ones", "full", "asarray", "vdot",
                 "isfinite", "all", "any", "sum", "arange", "stack", "clip", "logaddexp",
                 "square", "log", "negative", "transpose", "ascontiguousarray",
                 "moveaxis", "bincount", "broadcast_to", "shares_memory"):
        setattr(xp, name, _function(name))
    xp.finfo, xp.float32, xp.float64, xp.ndarray = np.finfo, np.float32, np.float64, StrictArray
    xp.random = types.SimpleNamespace(default_rng=_Generator)
    return xp


def to_numpy(x):
    return np.array(x.a, copy=True)
