"""S3: the objects and multipart uploads that items point to, and orphaned objects."""
