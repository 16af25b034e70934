"""The analyst layer: dbt models over the tables klaviyo_source loads (this folder is the dbt project).

    from klaviyo_dbt import build
    build(pipeline)                    # dbt build against the pipeline's destination and dataset

The models read only the loaded tables and land in the schema `<dataset>_analytics`. The same project runs
with plain `dbt build` from this folder (profiles.yml there reads its settings from the environment).
Needs the `dbt` extra: pip install -e ".[dbt]".
"""

from klaviyo_dbt.runner import PROJECT_DIR, BuildResult, TransformError, analytics_schema, build, dbt_installed

__all__ = ["PROJECT_DIR", "BuildResult", "TransformError", "analytics_schema", "build", "dbt_installed"]
