"""DynamoDB: TTL values, expired items, the sweep and its S3 cascade, orphaned index entries, leases."""
