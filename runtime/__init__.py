"""Code that runs in Lambda, the operator CLI and the dynamic provider: stdlib and boto3 only."""
