"""The base class of the errors this package raises on purpose about its user's input."""


class HBIInputError(ValueError):
    """A file, folder or value given to the package cannot be used: a damaged index, another model, an empty query,
    a video without a decodable frame, a never-trained estimator, ... The message says what is wrong and, where there
    is one, the fix. `hbi-hf` prints these (and `OSError`s: missing files, held locks) as
    `hbi-hf COMMAND: error: MESSAGE` with exit status 1; any other exception is a bug and keeps its traceback."""


__all__ = ["HBIInputError"]
