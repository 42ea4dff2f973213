#!/usr/bin/env python3
"""Stream synthetic embeddings to embedflow and print the UploadResult.

    python3 upload.py --target 127.0.0.1:50051 --rows 10000 --dim 768

The same as `embedflow-upload` from the package (`pip install
./examples/python`, see README.md), runnable from this directory without
installing: the code is in embedflow_client/upload.py.
"""
import sys

from embedflow_client.upload import (SERVICE, chunked, main,  # noqa: F401
                                     synthetic_rows, upload,
                                     upload_with_retry)

if __name__ == "__main__":
    sys.exit(main())
