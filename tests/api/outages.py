"""Breaking the API's database connection on purpose, for the outage tests: a TCP proxy in front of the
test server that a test can stop (every connection cut, new ones refused) and start again, or hold (what
clients send then waits in it, their connections kept open: a link that died silently) and release, a port
where nothing listens, and the API command run as a process."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from urllib.parse import parse_qs, urlsplit, urlunsplit


class DatabaseProxy:
    """Listens on 127.0.0.1 and relays each connection to the database server of `server_url`."""

    def __init__(self, server_url: str) -> None:
        parts = urlsplit(server_url)
        self.server_url = server_url
        self.host = parse_qs(parts.query).get("host", [parts.hostname or "localhost"])[0]
        self.port = parts.port or 5432
        self.listen_port = 0
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.relaying = asyncio.Event()  # cleared: what clients send waits here (hold)
        self.relaying.set()

    def hold(self) -> None:
        """Keep what clients send from now on from reaching the server, without closing anything: a
        statement in flight stays in the proxy until `release` (it is then sent) or `stop` (which cuts
        its connection). New connections are accepted, and their start-up held too."""
        self.relaying.clear()

    def release(self) -> None:
        """Relay again: what `hold` kept goes on to the server, and what clients send after it."""
        self.relaying.set()

    def url(self) -> str:
        """server_url, reached through the proxy."""
        parts = urlsplit(self.server_url)
        auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        return urlunsplit(("postgresql", f"{auth}127.0.0.1:{self.listen_port}", parts.path, "", ""))

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.listen_port)
        self.listen_port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Refuse new connections and cut the open ones."""
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for writer in list(self.writers):
            await writer.wait_closed()
        await self.server.wait_closed()
        self.writers.clear()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self.host.startswith("/"):
            server = await asyncio.open_unix_connection(f"{self.host}/.s.PGSQL.{self.port}")
        else:
            server = await asyncio.open_connection(self.host, self.port)
        server_reader, server_writer = server
        self.writers.update((client_writer, server_writer))
        pipes = [
            asyncio.ensure_future(self._pipe(client_reader, server_writer, self.relaying)),
            asyncio.ensure_future(self._pipe(server_reader, client_writer)),
        ]
        self.tasks.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            for writer in (client_writer, server_writer):
                writer.close()
            self.tasks.difference_update(pipes)

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, relaying: asyncio.Event | None = None
    ) -> None:
        while data := await reader.read(65536):
            if relaying is not None:
                await relaying.wait()
            writer.write(data)
            await writer.drain()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run_api_command(**settings: str) -> tuple[int | None, bytes]:
    """`python -m atelier_api` with these settings; its exit code and standard error."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "atelier_api",
        env={**os.environ, **settings},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode, stderr
