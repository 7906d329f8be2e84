import os
import signal

import pytest

from torch_mnist.files import atomic_write


class TestAtomicWrite:
    def test_failed_write_leaves_previous_file_intact(self, tmp_path):
        path = tmp_path / "ckpt.pt"
        path.write_bytes(b"previous complete checkpoint")

        def crash_half_way(f):
            f.write(b"half of a new chec")
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            atomic_write(path, crash_half_way)
        assert path.read_bytes() == b"previous complete checkpoint"
        assert os.listdir(tmp_path) == ["ckpt.pt"]  # no temporary file left behind

    def test_ctrl_c_during_a_write_waits_for_it_to_complete(self, tmp_path):
        path = tmp_path / "ckpt.pt"
        path.write_bytes(b"previous")

        def interrupted_half_way(f):
            f.write(b"new first half, ")
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives mid-write
            f.write(b"new second half")

        signal.signal(signal.SIGINT, signal.default_int_handler)
        with pytest.raises(KeyboardInterrupt):
            atomic_write(path, interrupted_half_way)
        assert path.read_bytes() == b"new first half, new second half"
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored

    def test_a_link_planted_at_a_predictable_temporary_name_is_not_followed(self, tmp_path):
        # In a shared folder, someone may plant links where a naive writer would put its temporary file.
        victim = tmp_path / "victim"
        victim.write_bytes(b"someone else's file")
        path = tmp_path / "ckpt.pt"
        for pid in range(os.getpid() - 5, os.getpid() + 5):
            (tmp_path / f".ckpt.pt.{pid}.tmp").symlink_to(victim)
        atomic_write(path, lambda f: f.write(b"checkpoint"))
        assert path.read_bytes() == b"checkpoint" and not path.is_symlink()
        assert victim.read_bytes() == b"someone else's file"

    def test_the_new_file_gets_the_usual_permissions(self, tmp_path):
        path = tmp_path / "ckpt.pt"
        atomic_write(path, lambda f: f.write(b"x"))
        mask = os.umask(0)
        os.umask(mask)
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask
