"""A stand-in for a phone running an IP-camera app: MJPEG over HTTP from a real clip.

``frames_per_connection`` makes the "phone" hang up after that many frames, as a phone on a
flaky Wi-Fi does; the next connection starts where the clip left off.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2


class PhoneCamera:
    def __init__(self, clip: Path, frames_per_connection: int = 10_000) -> None:
        cap = cv2.VideoCapture(str(clip))
        self.jpegs: list[bytes] = []
        while True:
            ok, image = cap.read()
            if not ok:
                break
            self.jpegs.append(cv2.imencode(".jpg", image)[1].tobytes())
        cap.release()
        self.frames_per_connection = frames_per_connection
        self.connections = 0
        self._next = 0
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                camera.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    for _ in range(camera.frames_per_connection):
                        jpeg = camera.jpegs[camera._next % len(camera.jpegs)]
                        camera._next += 1
                        self.wfile.write(
                            b"--frame\r\nContent-Type: image/jpeg\r\n"
                            + f"Content-Length: {len(jpeg)}\r\n\r\n".encode()
                            + jpeg
                            + b"\r\n"
                        )
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/video.mjpg"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> PhoneCamera:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
