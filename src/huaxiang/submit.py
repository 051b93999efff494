"""`huaxiang build` as a Spark application, for `spark-submit` (cluster or client mode):

    spark-submit --master yarn --conf spark.executor.memory=8g … "$(python -m huaxiang.submit --path)" \
        build --engine spark --input s3a://lake/shop/ --output s3a://lake/profiles/

The master and every other setting come from spark-submit (its options, `spark-defaults.conf`), not from
`--master`; the executors' Python must import huaxiang (`spark.pyspark.python`, or a shipped virtualenv).
`python -m huaxiang.submit --path` prints this file's path.
"""
import os
import sys

# run as a script, this file's folder (the package's own) comes first on sys.path, where huaxiang's `profile`
# would hide the standard library's
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

from huaxiang.cli import main  # noqa: E402

if __name__ == "__main__":
    if sys.argv[1:] == ["--path"]:
        print(__file__)
        sys.exit(0)
    if sys.argv[1:2] == ["build"] and "--master" not in sys.argv:
        sys.argv += ["--master", ""]  # spark-submit has set it: leave it alone
    main()
