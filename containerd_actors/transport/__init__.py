"""The only code that touches pynng's private lib/ffi: the request side, the reply side."""
