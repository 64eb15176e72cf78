"""`pacsbench send`: C-STORE every DICOM file under a folder with the harness's fast path."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.common.errors import UserError

EPILOG_SEND = """examples:
  pacsbench send results/studies-dsa-unit-seed1 --host 127.0.0.1 --port 11112 --aet PACSBENCH
  pacsbench send /data/xa --host pacs.example.org --port 104 --aet ARCHIVE --associations 4 --json
The last line printed holds instances/s, frames/s, MB/s and failures; exit status 1 on any failure."""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "send",
        help="send every DICOM file under a folder with the harness's fast C-STORE path",
        description="C-STORE every DICOM Part 10 file under DIR (recursively) to an archive over N associations, "
        "datasets streamed as they are stored in the files. Seconds run from the first association request to "
        "the last release.",
        epilog=EPILOG_SEND,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("folder", type=Path, metavar="DIR", help="folder holding the DICOM files")
    p.add_argument("--host", required=True, help="archive host")
    p.add_argument("--port", type=int, required=True, help="archive DICOM port")
    p.add_argument("--aet", required=True, help="archive AE title (called AE)")
    p.add_argument("--calling-aet", default="PACSBENCH-SCU", help="our AE title (default PACSBENCH-SCU)")
    p.add_argument("--associations", type=int, default=1, metavar="N", help="parallel associations (default 1)")
    p.add_argument("--max-pdu", type=int, default=0, help="largest PDU we receive (default 0: unlimited)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds for association set-up and each response")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the summary line")
    p.set_defaults(func=cmd_send)


def cmd_send(args) -> int:
    import json

    from bench.dicom.peer import Peer
    from bench.load.send import scan_folder, send_files

    if args.associations < 1:
        raise UserError("--associations must be 1 or more")
    files = scan_folder(args.folder)
    result = send_files(
        files, Peer(args.host, args.port, args.aet), args.calling_aet, args.associations, args.max_pdu, args.timeout
    )
    for error in result.errors:
        print(f"pacsbench: error: {error}", file=sys.stderr)
    print(json.dumps(result.rates()) if args.json else result.line())
    return 1 if result.failures else 0
