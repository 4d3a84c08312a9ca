"""jobs: the distributed crop job. Owns Arrow, object storage and Ray; composes cropcore."""
