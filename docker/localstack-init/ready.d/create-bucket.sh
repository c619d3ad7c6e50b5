#!/usr/bin/env bash
# LocalStack init hook (runs once S3 is ready): the bucket the services store pictures in.
set -euo pipefail
BUCKET="${RASTER_BUCKET:-raster-pictures}"
if awslocal s3api head-bucket --bucket "$BUCKET" >/dev/null 2>&1; then
  echo "create-bucket.sh: bucket $BUCKET already exists"
else
  awslocal s3 mb "s3://$BUCKET"
fi
