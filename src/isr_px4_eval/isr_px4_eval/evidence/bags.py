"""Reading rosbag2 files: complete bags through rosbags, bags cut short by a crash record by record.

:class:`BagSource` reads MCAP (and sqlite3) bags of the workspace or of ``ros2 bag record``;
:func:`scan_mcap` walks an MCAP file's records without its summary section (a run killed part-way
leaves one).
"""

from __future__ import annotations

import json
import re
import sqlite3
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from isr_direct_dynamics.io_checks import describe_exception
from isr_px4_eval.evidence.recording import T_STRING, TOPIC_METADATA, BagError
from isr_sim_bridge import rosmsg

# ---------------------------------------------------------------------------------------------
# Reading (complete bags through rosbags, cut-short bags record by record)


MCAP_MAGIC = b"\x89MCAP0\r\n"


MCAP_MAX_CHUNK_BYTES = 1 << 31
"""Largest decompressed MCAP chunk the record scanner accepts (a larger size is corruption)."""

SQLITE_MAGIC = b"SQLite format 3\x00"


def _u16(b: bytes, o: int) -> int:
    return struct.unpack_from("<H", b, o)[0]


def _u32(b: bytes, o: int) -> int:
    return struct.unpack_from("<I", b, o)[0]


def _u64(b: bytes, o: int) -> int:
    return struct.unpack_from("<Q", b, o)[0]


def _str(b: bytes, o: int) -> tuple[str, int]:
    n = _u32(b, o)
    return b[o + 4 : o + 4 + n].decode("utf-8", "replace"), o + 4 + n


def scan_mcap(
    path: Path,
) -> tuple[dict[int, tuple[str, str]], dict[int, tuple[str, str]], list, bool]:
    """Record-by-record MCAP scan that stops cleanly at a cut.

    Returns schemas ``{id: (name, text)}``, channels ``{id: (topic, schema name)}``, messages
    ``[(channel id, log_time_ns, data)]`` and whether the file ended before its footer.
    """
    data = path.read_bytes()
    if not data:
        raise BagError(f"{path} is empty (0 bytes): not an MCAP bag")
    if not data.startswith(MCAP_MAGIC):
        raise BagError(f"{path} is not an MCAP file (no MCAP magic bytes)")
    schemas: dict[int, tuple[str, str]] = {}
    channels: dict[int, tuple[str, str]] = {}
    msgs: list[tuple[int, int, bytes]] = []

    def records(buf: bytes, pos: int, end: int) -> Iterator[tuple[int, bytes]]:
        while pos + 9 <= end:
            op = buf[pos]
            ln = _u64(buf, pos + 1)
            if pos + 9 + ln > end:
                return
            yield op, buf[pos + 9 : pos + 9 + ln]
            pos += 9 + ln

    complete = False

    def handle(op: int, body: bytes, nested: bool) -> None:
        nonlocal complete
        if op == 0x03:
            sid = _u16(body, 0)
            name, o = _str(body, 2)
            _enc, o = _str(body, o)
            text, _ = _str(body, o)
            schemas[sid] = (name, text)
        elif op == 0x04:
            cid, sid = _u16(body, 0), _u16(body, 2)
            topic, _ = _str(body, 4)
            channels[cid] = (topic, schemas.get(sid, ("", ""))[0])
        elif op == 0x05:
            msgs.append((_u16(body, 0), _u64(body, 6), body[22:]))
        elif op == 0x06 and not nested:
            usize, o = _u64(body, 16), 28
            comp, o = _str(body, o)
            clen = _u64(body, o)
            payload = body[o + 8 : o + 8 + clen]
            if comp == "zstd":
                import zstandard

                if usize > MCAP_MAX_CHUNK_BYTES:
                    raise ValueError(f"chunk of {usize} bytes")
                payload = zstandard.ZstdDecompressor().decompress(payload, max_output_size=usize)
            elif comp:
                raise BagError(f"unsupported MCAP chunk compression {comp!r}")
            for op2, b2 in records(payload, 0, len(payload)):
                handle(op2, b2, True)
        elif op == 0x02:
            complete = True

    for op, body in records(data, len(MCAP_MAGIC), len(data)):
        try:
            handle(op, body, False)
        except BagError:
            raise
        except Exception:  # noqa: BLE001 - a damaged record: keep what came before, as a cut
            return schemas, channels, msgs, True
    return schemas, channels, msgs, not complete


class BagSource:
    """Topics and messages of a rosbag2 bag (directory, ``.mcap`` or ``.db3``), even cut short.

    Complete bags are read with rosbags (mcap or sqlite3); a bag without ``metadata.yaml`` or
    whose MCAP lacks its summary is scanned record by record (``truncated`` is then True).
    Message types unknown to ROS 2 Humble are registered from the definitions stored in the bag.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"bag not found: {self.path}")
        from rosbags.typesys import Stores, get_typestore

        self.typestore = get_typestore(Stores.ROS2_HUMBLE)
        self._register(rosmsg.isr_typestore().fielddefs)
        self.truncated = False
        self.topics: dict[str, str] = {}
        self._raw: list[tuple[str, int, bytes]] | None = None
        self._reader_paths: list[Path] = []
        self._open()

    def _register(self, types: dict[str, Any]) -> None:
        missing = {k: v for k, v in types.items() if k not in self.typestore.fielddefs}
        if missing:
            self.typestore.register(missing)

    def _register_msgdef(self, name: str, text: str) -> None:
        if not text or name in self.typestore.fielddefs:
            return
        from rosbags.typesys import get_types_from_msg

        try:
            self._register(get_types_from_msg(text, name))
        except Exception:  # noqa: BLE001 - an unparsable definition only hides that topic
            pass

    def _open(self) -> None:
        p = self.path
        if p.is_dir() and (p / "metadata.yaml").is_file():
            try:
                self._open_rosbags([p])
                return
            except Exception:  # noqa: BLE001 - fall back to scanning the storage files
                pass
        files = sorted(p.glob("*.mcap")) + sorted(p.glob("*.db3")) if p.is_dir() else [p]
        if not files:
            raise BagError(f"{p} holds no rosbag2 storage file (.mcap or .db3)")
        raw: list[tuple[str, int, bytes]] = []
        for f in files:
            if f.suffix == ".mcap":
                try:
                    self._open_rosbags([f])
                    self._raw = None
                    if len(files) == 1:
                        return
                except Exception:  # noqa: BLE001
                    pass
                schemas, channels, msgs, cut = scan_mcap(f)
                if cut and not channels:
                    raise BagError(
                        f"{f} is cut short or corrupt: no readable MCAP records after its header"
                    )
                self.truncated |= cut
                for name, text in schemas.values():
                    self._register_msgdef(name, text)
                for topic, typ in channels.values():
                    self.topics[topic] = typ
                raw += [(channels[c][0], t, d) for c, t, d in msgs if c in channels]
            elif f.suffix == ".db3":
                raw += self._scan_sqlite(f)
            else:
                raise BagError(f"{f} is not a rosbag2 bag (directory, .mcap or .db3)")
        raw.sort(key=lambda r: r[1])
        self._raw = raw
        self._reader_paths = []

    def _scan_sqlite(self, f: Path) -> list[tuple[str, int, bytes]]:
        try:
            with open(f, "rb") as fh:
                head = fh.read(len(SQLITE_MAGIC))
        except OSError as exc:
            raise BagError(f"cannot read bag {f}: {exc.strerror or exc}") from None
        if not head:
            raise BagError(f"{f} is empty (0 bytes): not a rosbag2 sqlite3 bag")
        if head != SQLITE_MAGIC:
            raise BagError(f"{f} is not a rosbag2 sqlite3 bag (not an SQLite database)")
        try:
            return self._read_sqlite(f)
        except sqlite3.Error as exc:
            msg = str(exc)
            if "no such table" in msg or "no such column" in msg:
                raise BagError(f"{f} is an SQLite database but not a rosbag2 bag ({msg})") from None
            raise BagError(f"{f} is a corrupt or cut-short sqlite3 bag ({msg})") from None

    def _read_sqlite(self, f: Path) -> list[tuple[str, int, bytes]]:
        con = sqlite3.connect(f"file:{f}?mode=ro", uri=True)
        try:
            cols = [r[1] for r in con.execute("PRAGMA table_info(topics)")]
            rows = con.execute("SELECT id, name, type FROM topics").fetchall()
            ids = {}
            for tid, name, typ in rows:
                self.topics[name] = typ
                ids[tid] = name
            if "message_definitions" in {
                r[0] for r in con.execute("SELECT name FROM sqlite_master")
            }:
                query = (
                    "SELECT topic_type, encoding, encoded_message_definition "
                    "FROM message_definitions"
                )
                for typ, enc, text in con.execute(query):
                    if enc == "ros2msg":
                        self._register_msgdef(typ, text)
            _ = cols
            return [
                (ids[t], int(ts), bytes(d))
                for t, ts, d in con.execute("SELECT topic_id, timestamp, data FROM messages")
                if t in ids
            ]
        finally:
            con.close()

    def _open_rosbags(self, paths: list[Path]) -> None:
        from rosbags.highlevel import AnyReader

        with AnyReader(paths, default_typestore=self.typestore) as reader:
            for c in reader.connections:
                self.topics[c.topic] = c.msgtype
                self._register_msgdef(c.msgtype, c.msgdef.data if c.msgdef else "")
        self._reader_paths = paths

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[tuple[str, int, Any]]:
        """``(topic, timestamp_ns, message)`` in time order; undecodable messages are skipped."""
        want = set(self.topics) if topics is None else set(topics)
        if self._raw is None:
            from rosbags.highlevel import AnyReader

            try:
                with AnyReader(self._reader_paths, default_typestore=self.typestore) as reader:
                    conns = [c for c in reader.connections if c.topic in want]
                    for c, t, raw in reader.messages(connections=conns):
                        try:
                            msg = reader.deserialize(raw, c.msgtype)
                        except Exception:  # noqa: BLE001
                            continue
                        yield c.topic, t, msg
            except BagError:
                raise
            except Exception as exc:  # noqa: BLE001 - rosbags raises several types for damage
                raise BagError(
                    f"bag {self.path} is corrupt: cannot read its messages "
                    f"({describe_exception(exc)})"
                ) from None
            return
        for topic, t, raw in self._raw:
            if topic not in want:
                continue
            try:
                yield topic, t, self.typestore.deserialize_cdr(raw, self.topics[topic])
            except Exception:  # noqa: BLE001 - a message cut by a crash
                continue

    def topics_of_type(self, msgtype: str) -> list[str]:
        """Topics of one type, sorted naturally (``drone_2`` before ``drone_10``)."""
        return sorted((t for t, ty in self.topics.items() if ty == msgtype), key=natural_key)

    def describe(self) -> str:
        """``topic (type)`` list, for error messages."""
        if not self.topics:
            return "no topics"
        return ", ".join(
            f"{t} ({ty})" for t, ty in sorted(self.topics.items(), key=lambda x: natural_key(x[0]))
        )

    def metadata(self) -> dict[str, Any]:
        """The JSON of ``/isr/metadata`` (empty when the bag has none)."""
        if self.topics.get(TOPIC_METADATA) != T_STRING:
            return {}
        for _, _, msg in self.messages([TOPIC_METADATA]):
            try:
                return dict(json.loads(msg.data))
            except (ValueError, TypeError):
                return {}
        return {}


def natural_key(s: str) -> list[Any]:
    """Sort key: digit runs compare as numbers."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", s)]
