"""The vector index section: where the similarity index lives and how it is built and searched.

``index_uri`` picks the engine: a folder ending in ``.usearch`` is the embedded one (usearch
HNSW files in the process that opens them, one process at a time; the default), an
``http(s)://`` URI a Milvus standalone server or cluster (``deploy/``), a ``.db`` file
milvus-lite (the same pymilvus calls as a server). Shared by ``genretag similar``, ``genretag
index`` and the Python API (:mod:`genretag.core.similarity`).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, SecretStr, field_validator

from genretag.core.settings.base import Section


class IndexSection(Section):
    """The similarity index (public names ``index_*``)."""

    public_prefix: ClassVar[str] = "index_"

    uri: str = Field(
        default=".genretag/similarity.usearch",
        description="A local folder ending in .usearch (embedded, no server), "
        "http(s)://HOST:19530 (a Milvus server or cluster) or a file ending in .db "
        "(milvus-lite).")
    token: SecretStr | None = Field(
        default=None, description="Milvus credentials (user:password or API key), servers only.")
    collection_prefix: str = Field(
        default="genretag", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$",
        description="Start of every collection name (one collection per embedding space).")
    hnsw_m: int = Field(default=16, ge=4, le=128, description="HNSW graph degree (M).")
    ef_construction: int = Field(default=128, ge=8, le=2048,
                                 description="HNSW build breadth (efConstruction).")
    search_ef: int = Field(default=64, ge=8, le=4096,
                           description="HNSW search breadth (ef; at least the --limit asked).")
    sync_batch: int = Field(default=1000, ge=1, le=100000,
                            description="Vectors read from Redis and upserted per round.")

    @field_validator("uri")
    @classmethod
    def _file_or_server(cls, value: str) -> str:
        if not (value.endswith((".usearch", ".db")) or value.startswith(("http://", "https://"))):
            raise ValueError("index_uri must be a folder ending in .usearch, an http(s):// "
                             "Milvus address or a milvus-lite file ending in .db")
        return value

    @property
    def engine(self) -> Literal["usearch", "milvus"]:
        return "usearch" if self.uri.endswith(".usearch") else "milvus"

    @property
    def embedded(self) -> bool:
        """True for a local index (no server)."""
        return not self.uri.startswith(("http://", "https://"))
