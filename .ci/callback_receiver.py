"""A tiny intake system for .ci/schemathesis.sh: answers every callback 204
and appends its headers and body to the JSON-lines file argv[2].
Usage: callback_receiver.py PORT OUT.jsonl"""

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace")
        with open(sys.argv[2], "a", encoding="utf-8") as f:
            f.write(json.dumps({"path": self.path,
                                "headers": {k.lower(): v for k, v in self.headers.items()},
                                "body": body}) + "\n")
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", int(sys.argv[1])), Receiver).serve_forever()
