"""Where in the user's code something happened: the line a warning or an error names."""
import os
import traceback

_LIBRARY = os.path.dirname(os.path.abspath(__file__))
_APPLICATION = os.path.join(_LIBRARY, "mnist") + os.sep


def user_site():
    """'file:line: code' of the innermost caller outside the library: the user's code, or the
    MNIST application's (tinygrad_mnist/mnist/ uses the library as any user does)."""
    for frame in reversed(traceback.extract_stack()[:-1]):
        path = os.path.abspath(frame.filename)
        if not path.startswith(_LIBRARY + os.sep) or path.startswith(_APPLICATION):
            return f"{frame.filename}:{frame.lineno}: {(frame.line or '').strip()}"
    return "unknown location"
