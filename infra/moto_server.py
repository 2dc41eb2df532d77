"""moto_server, the local AWS, with one answer corrected to what S3 sends.

Run with the project's virtualenv: `.venv/bin/python infra/moto_server.py -H 127.0.0.1 -p PORT`
(the arguments are moto_server's).

S3 answers GetBucketVersioning with a `<VersioningConfiguration>` document (with no
`Status` when the bucket never had versioning). moto 5.2.5 names the root element
`<GetBucketVersioningResponse>`, which the AWS SDK for Rust rejects ("expected
VersioningConfiguration"). The functions ask that question before listing old versions, so
the local endpoint must answer it as S3 does. Every other request is moto's own.
"""

import sys

from moto.s3.responses import S3Response
from moto.server import main


def get_bucket_versioning(self):
    status = self.backend.get_bucket_versioning(self.bucket_name)
    inner = "" if status is None else f"<Status>{status}</Status>"
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        f"{inner}</VersioningConfiguration>"
    )
    return 200, {"Content-Type": "application/xml"}, body


S3Response.get_bucket_versioning = get_bucket_versioning

if __name__ == "__main__":
    sys.exit(main())
