from testbed.qmp_channel import QmpCommandError


def test_a_qmp_error_without_arguments_keeps_its_message_and_class():
    e = QmpCommandError("vm1", "query-migrate", None, None, "ConnectionResetError: gone")
    assert str(e) == "vm1: QMP query-migrate {} failed: ConnectionResetError: gone"
    assert e.arguments is None and e.error_class is None
    e = QmpCommandError("vm1", "device_del", {"id": "x"}, "DeviceNotFound", "Device 'x' not found")
    assert e.error_class == "DeviceNotFound" and e.arguments == {"id": "x"}
