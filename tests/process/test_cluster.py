"""The cluster of ``TF_CONFIG`` (``process/cluster.py``): roles, and bad variables refused."""

import json

import pytest

from keras_sdmtcnn.errors import UserError
from keras_sdmtcnn.process.cluster import read_cluster


def _config(cluster, task_type="worker", index=0):
    return {"TF_CONFIG": json.dumps({"cluster": cluster,
                                     "task": {"type": task_type, "index": index}})}


def test_the_chief_is_the_chief_task_or_else_worker_zero():
    workers = {"worker": ["a:1", "b:2", "c:3"]}
    assert read_cluster(_config(workers, index=0)).is_chief
    assert not read_cluster(_config(workers, index=2)).is_chief
    with_chief = {"chief": ["c:9"], "worker": ["a:1", "b:2"]}
    assert read_cluster(_config(with_chief, "chief", 0)).is_chief
    worker0 = read_cluster(_config(with_chief, "worker", 0))
    assert not worker0.is_chief and worker0.num_workers == 3
    assert worker0.chief_name == "chief 0 (c:9)" and worker0.name() == "worker 0 (a:1)"
    assert [t[2] for t in worker0.peers()] == ["c:9", "b:2"]


@pytest.mark.parametrize("environ,message", [
    ({}, "training.distribute: multi_worker needs the TF_CONFIG environment variable"),
    ({"TF_CONFIG": "{not json"}, "TF_CONFIG is not valid JSON"),
    ({"TF_CONFIG": "[]"}, "TF_CONFIG must be a JSON object"),
    (_config({"worker": ["a:1", "b:2"]}, index=2),
     "TF_CONFIG task.index 2 is outside the cluster: job worker has 2 task(s), indices 0 to 1."),
    (_config({"worker": ["a:1"]}, task_type="ps"), "TF_CONFIG task.type is 'ps'"),
    (_config({"worker": ["a"]}), "TF_CONFIG cluster.worker must be a list of \"HOST:PORT\""),
    (_config({"ps": ["a:1"]}), "TF_CONFIG's cluster has no chief or worker task"),
    (_config({"chief": ["a:1", "b:2"]}, "chief"), "a cluster has at most one chief"),
])
def test_a_wrong_tf_config_is_one_error_naming_what_to_fix(environ, message):
    with pytest.raises(UserError) as caught:
        read_cluster(environ)
    assert message in str(caught.value)
