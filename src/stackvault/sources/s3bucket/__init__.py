"""An S3 bucket or prefix as a source (sources layer): ``s3://BUCKET[/PREFIX][?option=...]``.

Every object whose key starts with ``PREFIX/`` (the whole bucket without a prefix) is captured,
with its content type, user metadata and other standard headers; a restore puts them back below
the prefix of the target URL, which may name another bucket, prefix or server.

Options (credentials come from boto3's chain - ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_PROFILE``, ``~/.aws`` - and are refused in the URL):

==================  ==========================================================================
``endpoint``        server URL (default: AWS, or ``STACKVAULT_S3_ENDPOINT``)
``region``          region (default: the AWS configuration's, else ``us-east-1``)
``path-style``      ``true`` for path-style addressing (default: true with an endpoint)
``tls-verify``      ``false`` to skip certificate checks; ``ca-bundle``: a CA file to trust
``profile``         AWS profile; ``timeout``, ``retries``, ``retry-time``: as for repositories
``create-bucket``   restore: create the bucket if it is missing (default: refuse)
``delete-extra``    restore: delete the objects below the prefix that the artifact does not
                    hold (default: keep them and report them)
``name``            the artifact's name (default ``s3-BUCKET``)
==================  ==========================================================================

The parts, each with the rest of the story: `keys` (object keys as artifact paths), `manifest`
(the artifact), `headers` (what is kept of an object's headers), `bucket` (requests, failures,
listing), `transfer` (checked downloads, upload bodies; the checks), `source` (`BucketSource`:
capture, facts, restore).
"""

from stackvault.sources.s3bucket.keys import artifact_paths, key_from_path
from stackvault.sources.s3bucket.manifest import FORMAT, MANIFEST
from stackvault.sources.s3bucket.source import BucketSource

__all__ = ["FORMAT", "MANIFEST", "BucketSource", "artifact_paths", "key_from_path"]
