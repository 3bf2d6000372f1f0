"""Guards: cheap functions that say whether what a recording depends on, besides its
arguments, is still what it was. A failed guard records again.

The one rule for values the step reads from outside its arguments (globals its code names,
its closure's variables, the instance of a bound method, and through them the attributes of
plain objects and the items of dicts, lists and tuples, at any depth): they are followed.
Numbers, strings and other plain values must be equal, anything else the same object; a
change records again. Tensors, arrays, modules, optimizers and schedulers are followed by
identity here (their contents are read afresh at every replay, or guarded by module_guard).
A step that reads more than MAX_CHECKS such values is refused: pass them as arguments.
"""
import dis
import functools
import operator
import types

MAX_CHECKS = 10_000

_MISSING = object()
_PLAIN = (int, float, complex, str, bytes, bool, type(None))
_CODE_AND_CLASSES = (types.FunctionType, types.BuiltinFunctionType, types.MethodType,
                     types.ModuleType, type, functools.partial)


class TooMuchState(Exception):
    """The step reads more values from outside its arguments than a guard should check."""


def module_guard(module):
    """Whether `module` is still as it is now: every registered attribute (the train/eval
    mode, hyperparameters, parameters, sub-modules) the same object, none added or removed,
    and its lists and dicts holding the same objects."""
    values = module.__dict__
    registered = values.get("_registered", {})
    names = tuple(registered)
    members = tuple(values.get(name) for name in names)
    containers = [(v, _identities(v)) for v in members if isinstance(v, (list, dict))]
    count, same, get = len(names), operator.is_, values.get

    def holds():
        if len(registered) != count or not all(map(same, map(get, names), members)):
            return False
        for container, ids in containers:
            if _identities(container) != ids:
                return False
        return True
    return holds


def _identities(container):
    """The identities of a list's items, or of a dict's keys and values, in order."""
    if isinstance(container, dict):
        return tuple(map(id, container)) + tuple(map(id, container.values()))
    return tuple(map(id, container))


def environment_guard(fn, library):
    """(holds, reachable): `holds()` says whether everything `fn` reads from outside its
    arguments is as it was (the rule above); `reachable` lists the `library` objects
    (modules, optimizers, ...) found on the way. Functions reached this way are looked into
    the same way (a step calling a helper), except the library's own."""
    checks, reachable, seen, walked = [], [], set(), set()

    def watch(get, value, by_value=False):
        if len(checks) >= MAX_CHECKS:
            raise TooMuchState
        checks.append((get, value, by_value or isinstance(value, _PLAIN)))
        if by_value:
            return
        if isinstance(value, library):
            reachable.append(value)
            return
        if isinstance(value, _PLAIN) or isinstance(value, _CODE_AND_CLASSES) or \
                id(value) in walked:
            return
        walked.add(id(value))
        if isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                watch(functools.partial(_item, value, i), item)
        elif isinstance(value, dict):
            watch(functools.partial(tuple, value), tuple(value), by_value=True)
            for key, item in list(value.items()):
                watch(functools.partial(value.get, key, _MISSING), item)
        elif hasattr(value, "__dict__") and not _is_array_like(value):
            attributes = vars(value)
            watch(functools.partial(tuple, attributes), tuple(attributes), by_value=True)
            for name, item in list(attributes.items()):
                if isinstance(item, types.FunctionType):
                    look_into(item)
                else:
                    watch(functools.partial(attributes.get, name, _MISSING), item)

    def look_into(function, own=False):
        function = getattr(function, "__func__", function)
        if not isinstance(function, types.FunctionType) or id(function) in seen or (
                not own and _library_function(function)):
            return
        seen.add(id(function))
        globals_ = function.__globals__
        for name in sorted(_names(function.__code__) & globals_.keys()):
            value = globals_[name]
            if isinstance(value, types.FunctionType):
                look_into(value)
            elif not isinstance(value, _CODE_AND_CLASSES):
                watch(functools.partial(globals_.get, name, _MISSING), value)
        for cell in function.__closure__ or ():
            try:
                value = cell.cell_contents
            except ValueError:                       # not yet assigned
                continue
            if isinstance(value, types.FunctionType):
                look_into(value)
            elif not isinstance(value, _CODE_AND_CLASSES):
                watch(functools.partial(getattr, cell, "cell_contents"), value)

    target = fn
    if isinstance(fn, functools.partial):
        target = fn.func
        for value in fn.args:
            watch(lambda value=value: value, value)
    if isinstance(target, types.MethodType):
        watch(lambda: target.__self__, target.__self__)
    look_into(target, own=True)

    def holds():
        for get, value, by_value in checks:
            now = get()
            if now is not value and not (by_value and type(now) is type(value)
                                         and now == value):
                return False
        return True
    return holds, reachable


def _item(container, i):
    return container[i] if i < len(container) else _MISSING


def _library_function(function):
    """A function of this library (not of its application): what it reads is the library's
    own state, followed through the library's objects."""
    module = getattr(function, "__module__", "") or ""
    return (module == "tinygrad_mnist" or module.startswith("tinygrad_mnist.")) and \
        not module.startswith("tinygrad_mnist.mnist")


def _is_array_like(value):
    return hasattr(value, "__array__") or hasattr(value, "__array_interface__")


@functools.lru_cache(maxsize=256)
def _names(code):
    """The global names a code object (and the functions and lambdas inside it) reads (not
    the attribute names, which co_names lists too)."""
    names = {i.argval for i in dis.get_instructions(code)
             if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return frozenset(names)
