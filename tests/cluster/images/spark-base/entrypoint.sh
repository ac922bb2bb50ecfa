#!/bin/bash
# The container contract of Spark on Kubernetes (what spark-submit's pod templates and the Spark
# operator expect of a Spark image):
#   driver ARGS...   the driver pod: spark-submit in client mode, bound to $SPARK_DRIVER_BIND_ADDRESS
#   executor         an executor pod: the executor backend JVM, configured by SPARK_* variables
#   anything else    run as given
# ENTRYPOINT_DRY_RUN=1 prints the command instead of running it (for checks).
set -eo pipefail

SPARK_HOME=${SPARK_HOME:-/opt/spark}
JAVA=${JAVA_HOME:+$JAVA_HOME/bin/}java

# Configuration first (log4j2.properties, a mounted spark conf), then extra user jars, then Spark's own.
classpath="${SPARK_CONF_DIR:-$SPARK_HOME/conf}"
[ -z "$SPARK_CLASSPATH" ] || classpath+=":$SPARK_CLASSPATH"
classpath+=":$SPARK_HOME/jars/*"
[ -z "$SPARK_DIST_CLASSPATH" ] || classpath+=":$SPARK_DIST_CLASSPATH"

run() {
  if [ -n "$ENTRYPOINT_DRY_RUN" ]; then
    printf '%q ' "$@"; echo
    exit 0
  fi
  # tini reaps the Python workers' children and forwards signals (-s: also when not PID 1).
  exec /usr/bin/tini -s -- "$@"
}

case "$1" in
  driver)
    shift
    run "$SPARK_HOME/bin/spark-submit" \
      --conf "spark.driver.bindAddress=$SPARK_DRIVER_BIND_ADDRESS" \
      --deploy-mode client \
      "$@"
    ;;
  executor)
    shift
    # SPARK_JAVA_OPT_0..N in numeric order (the driver puts module options and spark.executor.extraJavaOptions there).
    java_opts=()
    for name in $(compgen -e | grep -E '^SPARK_JAVA_OPT_[0-9]+$' | sort -t_ -k4,4n); do
      java_opts+=("${!name}")
    done
    run "$JAVA" "${java_opts[@]}" \
      -Xms"$SPARK_EXECUTOR_MEMORY" -Xmx"$SPARK_EXECUTOR_MEMORY" \
      -cp "$classpath" \
      org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
      --driver-url "$SPARK_DRIVER_URL" \
      --executor-id "$SPARK_EXECUTOR_ID" \
      --cores "$SPARK_EXECUTOR_CORES" \
      --app-id "$SPARK_APPLICATION_ID" \
      --hostname "$SPARK_EXECUTOR_POD_IP" \
      --resourceProfileId "$SPARK_RESOURCE_PROFILE_ID" \
      --podName "$SPARK_EXECUTOR_POD_NAME" \
      "$@"
    ;;
  *)
    exec "$@"
    ;;
esac
