"""The Expiry stack: the cleanup infrastructure of one environment, from stack config alone."""

import pulumi

from stack.settings import read_settings
from stack.systems import build

built = build(read_settings(pulumi.Config()))

for key, table in built.tables.items():
    pulumi.export(f"{key.replace('-', '_')}_table_name", table.table_name)
    pulumi.export(f"{key.replace('-', '_')}_table_arn", table.table_arn)
for key, sweeper in [*built.sweepers.items(), *built.cascades.items()]:
    pulumi.export(f"{key.replace('-', '_')}_function_name", sweeper.function_name)
if built.archive_bucket is not None:
    pulumi.export("expired_archive_bucket_name", built.archive_bucket.bucket)
if built.bucket is not None:
    pulumi.export("uploads_bucket_name", built.bucket.bucket)
if built.pg_cleanup is not None:
    pulumi.export("attributes_purge_job_id", built.pg_cleanup.job_id)
if built.alarms is not None:
    pulumi.export("alarm_topic_arn", built.alarms.topic_arn)
    pulumi.export("dashboard_url", built.alarms.dashboard_url)
