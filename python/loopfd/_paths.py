"""Paths compiled into this copy of the package.

`make install-python` rewrites this file with the paths of the C build
(LIBEXECDIR, VERSION), as the C client's build/paths.h; these defaults are
`make install`'s (PREFIX=/usr/local).
"""

VERSION = "1.0.0"
HELPER_PATH = "/usr/local/libexec/loopfd-helper"
