"""A SparkSession with the settings that worked here (docs/stack-notes.md, Spark section).

The master and the memory are parameters; the composition root passes ``HARMONY_SPARK_MASTER``,
``HARMONY_SPARK_DRIVER_MEMORY`` (in local mode the driver JVM also runs the executors) and
``HARMONY_SPARK_EXECUTOR_MEMORY`` (each executor's on a standalone master such as the one
`harmony stack up --spark-workers N` starts; no more than a worker offers, or no executor starts).
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path


def session(master: str, driver_memory: str, app_name: str = "harmony-ml",
            checkpoint_dir: str | Path | None = None, executor_memory: str = "1g"):
    """Start (or reuse) a SparkSession bound to loopback, quiet, with a checkpoint directory.

    The checkpoint directory keeps ALS with ``maxIter >= 15`` from dying of a StackOverflowError
    (long RDD lineage); without one it is this process's temporary directory, removed when the process
    exits. On a standalone master the executors write it too: the stack's workers run on this machine,
    so a local path serves.
    """
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Python workers must run this interpreter (the venv with the project installed editable, so
    # executors import ml.* as the driver does), not whatever `python3` is. The driver hands this
    # variable to the executors of a standalone cluster too; the `spark.pyspark.python` setting would
    # come too late here (it is read by spark-submit, before this process).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    logging.getLogger("py4j").setLevel(logging.WARNING)  # its INFO lines would land in our JSON logs
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.driver.memory", driver_memory)
        .config("spark.executor.memory", executor_memory)  # unused in local mode
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    checkpoints = Path(checkpoint_dir) if checkpoint_dir is not None else _temporary_checkpoints()
    checkpoints.mkdir(parents=True, exist_ok=True)
    spark.sparkContext.setCheckpointDir(str(checkpoints))
    return spark


@functools.cache
def _temporary_checkpoints() -> Path:
    """One directory per process, however many sessions it asks for, removed at exit: every
    `harmony train` used to leave one in the temporary folder (a few MB each)."""
    path = Path(tempfile.mkdtemp(prefix="harmony-spark-checkpoints-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path
