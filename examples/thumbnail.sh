#!/bin/sh
# A job handler for `pgjobq work`, in plain shell:
#
#   pgjobq work thumbnails -- examples/thumbnail.sh
#
# The job's data JSON arrives on stdin; PGJOBQ_JOB_ID, PGJOBQ_QUEUE and
# PGJOBQ_ATTEMPT are in the environment. What it prints on stdout is the
# job's result (JSON); stderr goes to the worker's log. Exit 0 completes
# the job, exit 75 sends it to the back of its queue, anything else is an
# error.
set -eu
data=$(cat)
echo "thumbnail.sh: job $PGJOBQ_JOB_ID (attempt $PGJOBQ_ATTEMPT): $data" >&2
sleep 0.2  # the real work would happen here
printf '{"job": %s, "thumbnail_of": %s, "size": "128x128"}\n' \
  "$PGJOBQ_JOB_ID" "$data"
