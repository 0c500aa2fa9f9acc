"""workload.Child and GatedChild: the pid is known before any work runs."""
import os

from ebpf_tutor.labs.workload import Child, GatedChild


def test_child_works_only_after_go(tmp_path):
    marker = tmp_path / "ran"
    child = Child(lambda: marker.write_text(str(os.getpid())))
    assert not marker.exists()                  # forked, ready, waiting
    assert child.go() == b""
    assert marker.read_text() == str(child.pid)  # the work ran in that pid, and is done


def test_child_closed_without_go_never_works(tmp_path):
    marker = tmp_path / "ran"
    with Child(lambda: marker.touch()):
        pass
    assert not marker.exists()


def test_gated_child_reports_its_second_thread(tmp_path):
    with GatedChild(lambda: None) as child:
        tid = child.go()
    assert tid == child.tid and tid > 0 and tid != child.pid
