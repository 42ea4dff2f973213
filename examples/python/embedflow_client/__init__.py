"""Client of embedflow's gRPC upload: stream EmbeddingChunks to
UploadEmbeddings and get the UploadResult once every row is committed or
dead-lettered.

    from embedflow_client import upload_with_retry, chunked, synthetic_rows

embedflow_client.upload  the uploader API and the `embedflow-upload` CLI
embedflow_client.fast    numpy float32 arrays packed straight into the
                         wire format (needs numpy)
embedflow.v1             the generated stubs (embedding_pb2, ...)
"""
from .upload import (SERVICE, UploadFailed, channel_for, chunked,  # noqa: F401
                     synthetic_rows, upload_with_retry)

__version__ = "0.1.0"
