"""numpy vectors packed straight into the wire format.

`Embedding.vector` is `repeated float` packed: on the wire it is one
length-delimited field (number 6) whose payload is the little-endian
float32 values back to back, which is exactly `arr.astype('<f4').tobytes()`.
Building it from that avoids turning every value into a Python float and
back. The bytes are the same as the message a list would give (fields in
number order, as protobuf writes them), so embedflow cannot tell the two
apart; `upload`/`upload_with_retry` send bytes chunks as they are.

    import numpy as np
    from embedflow_client.fast import pack_embedding, pack_chunks
    items = [pack_embedding(f"doc-{i}", 0, vecs[i], model="m")
             for i in range(len(vecs))]
    upload_with_retry(target, list(pack_chunks(items, 256)))

Needs numpy (Debian: python3-numpy; pip: embedflow-client[numpy]).
"""
import numpy

from embedflow.v1 import embedding_pb2

_VECTOR = embedding_pb2.Embedding.DESCRIPTOR.fields_by_name["vector"].number
_ITEMS = embedding_pb2.EmbeddingChunk.DESCRIPTOR.fields_by_name["items"].number
_LENGTH_DELIMITED = 2


def _varint(n):
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number, payload):
    """A length-delimited field: tag, length, payload."""
    return (_varint(number << 3 | _LENGTH_DELIMITED) + _varint(len(payload))
            + payload)


def vector_field(vector):
    """The encoded `vector` field of an Embedding for a 1-D array (any
    numeric dtype: converted to float32 with the rounding protobuf uses
    for a Python float). Empty for an empty vector, as protobuf omits an
    empty packed field. Raises ValueError for a vector that is not 1-D."""
    arr = numpy.asarray(vector)
    if arr.ndim != 1:
        raise ValueError(f"a vector must be 1-D, not of shape {arr.shape}")
    if arr.size == 0:
        return b""
    return _field(_VECTOR, arr.astype("<f4", copy=False).tobytes())


def pack_embedding(document_id, chunk_index, vector, id="", content="",
                   metadata=None, model=""):
    """One encoded Embedding, equal byte for byte to
    Embedding(..., vector=list(vector)).SerializeToString(deterministic=True).
    The fields before and after `vector` are encoded by protobuf itself."""
    head = embedding_pb2.Embedding(
        id=id, document_id=document_id, chunk_index=chunk_index,
        content=content, metadata=metadata or {})
    tail = embedding_pb2.Embedding(model=model)
    return (head.SerializeToString(deterministic=True) + vector_field(vector)
            + tail.SerializeToString(deterministic=True))


def pack_chunk(items, seq):
    """One encoded EmbeddingChunk of encoded Embeddings (pack_embedding)."""
    body = b"".join(_field(_ITEMS, item) for item in items)
    return body + embedding_pb2.EmbeddingChunk(seq=seq).SerializeToString()


def pack_chunks(items, chunk_rows):
    """Groups encoded Embeddings into encoded EmbeddingChunks of at most
    chunk_rows items, seq 1, 2, ... (the same grouping as upload.chunked)."""
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    batch, seq = [], 0
    for item in items:
        batch.append(item)
        if len(batch) == chunk_rows:
            seq += 1
            yield pack_chunk(batch, seq)
            batch = []
    if batch:
        yield pack_chunk(batch, seq + 1)


def pack_matrix(document_ids, chunk_indexes, matrix, contents=None,
                metadata=None, model=""):
    """Encoded Embeddings for the rows of a 2-D array: row i gets
    document_ids[i], chunk_indexes[i] and contents[i] (when given); every
    row gets the same metadata and model. The matrix is converted to
    float32 once. Raises ValueError when the lengths do not match."""
    m = numpy.asarray(matrix)
    if m.ndim != 2:
        raise ValueError(f"matrix must be 2-D, not of shape {m.shape}")
    m = m.astype("<f4", copy=False)
    n = m.shape[0]
    if len(document_ids) != n or len(chunk_indexes) != n or (
            contents is not None and len(contents) != n):
        raise ValueError(f"{n} rows but {len(document_ids)} document ids, "
                         f"{len(chunk_indexes)} chunk indexes"
                         + (f", {len(contents)} contents" if contents
                            is not None else ""))
    for i in range(n):
        yield pack_embedding(document_ids[i], int(chunk_indexes[i]), m[i],
                             content=contents[i] if contents is not None
                             else "", metadata=metadata, model=model)
