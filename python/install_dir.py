"""Print where `make install-python` puts the package for PREFIX (argv[1]).

The distribution's own path: on Debian, /usr/lib/python3/dist-packages for
PREFIX=/usr (the deb_system scheme) and /usr/local/lib/python3.X/dist-packages
for PREFIX=/usr/local (posix_local); elsewhere PREFIX's purelib directory.
"""

import sys
import sysconfig

prefix = sys.argv[1].rstrip("/") or "/"
schemes = sysconfig.get_scheme_names()
if prefix == "/usr" and "deb_system" in schemes:
    scheme, base = "deb_system", "/usr"
elif prefix == "/usr/local" and "posix_local" in schemes:
    scheme, base = "posix_local", "/usr"
else:
    scheme, base = "posix_prefix", prefix
print(sysconfig.get_path("purelib", scheme, vars={"base": base, "platbase": base}))
