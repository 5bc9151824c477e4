"""Pack a wheelhouse folder into one tar whose bytes depend only on file names and contents.

Runs on the controller (any OS, the controller's Python): copying one file is far quicker
than copying a folder of wheels file by file, and identical bytes make the copy a change
only when a wheel changed.

    python pack_wheelhouse.py WHEELHOUSE_DIR OUT.tar
"""

from __future__ import annotations

import os
import sys
import tarfile


def pack(src: str, dest: str) -> None:
    tmp = dest + ".part"
    with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:
        for root, dirs, files in os.walk(src):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(root, name)
                info = tar.gettarinfo(path, arcname=os.path.relpath(path, src))
                if not info.isfile():
                    continue
                info.mtime = 0
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mode = 0o644
                with open(path, "rb") as fh:
                    tar.addfile(info, fh)
    os.replace(tmp, dest)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    pack(sys.argv[1], sys.argv[2])
