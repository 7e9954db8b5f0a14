"""Binds a unix socket, runs a command, and prints as JSON the exit code
and the bytes each connection sent (a stand-in for the syncs proxy).

    python3 listen_and_run.py /tmp/us1 -- ./seed
"""

import json
import os
import socket
import subprocess
import sys


def main(argv):
    sep = argv.index("--")
    path, command = argv[1], argv[sep + 1 :]
    if os.path.exists(path):
        os.unlink(path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(64)
    proc = subprocess.run(command, capture_output=True)
    # The command has exited: every connection it made is in the backlog
    # and ends with EOF once its bytes are read.
    srv.setblocking(False)
    conns = []
    while True:
        try:
            conn, _ = srv.accept()
        except BlockingIOError:
            break
        conn.setblocking(True)
        data = b""
        while True:
            chunk = conn.recv(1 << 16)
            if not chunk:
                break
            data += chunk
        conn.close()
        conns.append(data.hex())
    srv.close()
    os.unlink(path)
    print(json.dumps({
        "rc": proc.returncode,
        "stdout": proc.stdout.decode(errors="replace"),
        "stderr": proc.stderr.decode(errors="replace"),
        "connections": conns,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
