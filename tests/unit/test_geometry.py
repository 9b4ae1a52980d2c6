import numpy as np

from vlarl.envs.geometry import axis_angle, yaw

HALF = np.sqrt(0.5)


def test_axis_angle_by_hand():
    np.testing.assert_allclose(axis_angle(np.array([0, 0, 0, 1.0])), 0)
    np.testing.assert_allclose(axis_angle(np.array([0, 0, HALF, HALF])), [0, 0, np.pi / 2], atol=1e-9)  # 90 deg about z
    np.testing.assert_allclose(axis_angle(np.array([1.0, 0, 0, 0])), [np.pi, 0, 0], atol=1e-9)  # 180 deg about x


def test_yaw_by_hand():
    assert yaw(np.array([1.0, 0, 0, 0])) == 0
    np.testing.assert_allclose(yaw(np.array([HALF, 0, 0, HALF])), np.pi / 2)  # 90 deg about z
    # a gripper pointing down (180 deg about x) then turned 90 deg about world z: R = Rz(90) Rx(180)
    down_turned = np.array([0, HALF, HALF, 0])  # wxyz of Rz(90) * Rx(180)
    np.testing.assert_allclose(yaw(down_turned), np.pi / 2, atol=1e-9)
