"""The Parquet build's folders: on this machine (a path), or on whatever file system a URI names (s3a://,
hdfs://, gs://, abfs://, file://), reached through Spark's own Hadoop file systems — so the driver lists and
writes exactly what the cluster's executors read, with the cluster's credentials and settings."""
from __future__ import annotations

from pathlib import Path


def is_uri(where: str) -> bool:
    return "://" in where


class Folder:
    def __init__(self, where: str, session=None):
        self.where = where.rstrip("/") if is_uri(where) else str(Path(where))
        self._session = session
        if is_uri(where) and session is None:
            raise ValueError("a URI folder needs the Spark session")

    def __str__(self) -> str:
        return self.where

    def __truediv__(self, name: str) -> "Folder":
        return Folder(f"{self.where}/{name}", self._session)

    # on Hadoop: org.apache.hadoop.fs.FileSystem through py4j
    def _hadoop(self):
        jvm = self._session._jvm
        path = jvm.org.apache.hadoop.fs.Path(self.where)
        return path.getFileSystem(self._session._jsc.hadoopConfiguration()), path

    def exists(self) -> bool:
        if self._session is None:
            return Path(self.where).exists()
        fs, path = self._hadoop()
        return bool(fs.exists(path))

    def subfolders(self) -> list[str]:
        """The names of the folders directly inside."""
        if self._session is None:
            return sorted(p.name for p in Path(self.where).iterdir() if p.is_dir())
        fs, path = self._hadoop()
        return sorted(s.getPath().getName() for s in fs.listStatus(path) if s.isDirectory())

    def files(self, suffix: str) -> list[str]:
        """Every file below (at any depth) whose name ends with `suffix`, as paths or URIs."""
        if self._session is None:
            return sorted(str(f) for f in Path(self.where).rglob(f"*{suffix}"))
        fs, path = self._hadoop()
        found, it = [], fs.listFiles(path, True)
        while it.hasNext():
            name = it.next().getPath().toString()
            if name.endswith(suffix):
                found.append(name)
        return sorted(found)

    def read_text(self) -> str:
        if self._session is None:
            return Path(self.where).read_text()
        fs, path = self._hadoop()
        stream = fs.open(path)
        try:
            return self._session._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
        finally:
            stream.close()

    def write_text(self, text: str) -> None:
        if self._session is None:
            Path(self.where).write_text(text)
            return
        fs, path = self._hadoop()
        out = fs.create(path, True)
        try:
            out.write(bytearray(text.encode()))
        finally:
            out.close()

    def mkdir(self) -> None:
        if self._session is None:
            Path(self.where).mkdir(parents=True, exist_ok=True)
        else:
            fs, path = self._hadoop()
            fs.mkdirs(path)
