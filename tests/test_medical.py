"""DICOM, NIfTI and plain files through load_image: windows, colour, frames, slices, errors."""

from __future__ import annotations

import gzip
import warnings

import nibabel as nib
import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    JPEG2000,
    MPEG2MPML,
    CTImageStorage,
    ExplicitVRLittleEndian,
    UltrasoundImageStorage,
    generate_uid,
)

from mmkd_utils import ImageLoadError, load_image, to_rgb
from mmkd_utils.images import WINDOWS, window_bounds

# --------------------------------------------------------------------------- helpers


def _save(ds: Dataset, path) -> None:
    ds.save_as(path, enforce_file_format=True)


def write_dicom(path, pixels, *, frames=False, photometric=None, syntax=None, **attrs):
    """A minimal CT (or US for colour) file; ``frames=True`` means pixels is (N, H, W[, 3])."""
    arr = np.asarray(pixels)
    colour = arr.ndim == (4 if frames else 3)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UltrasoundImageStorage if colour else CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = syntax or ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "US" if colour else "CT"
    ds.Rows, ds.Columns = arr.shape[1:3] if frames else arr.shape[:2]
    if frames:
        ds.NumberOfFrames = arr.shape[0]
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = photometric or ("RGB" if colour else "MONOCHROME2")
    if colour:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = arr.dtype.itemsize * 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(np.issubdtype(arr.dtype, np.signedinteger))
    ds.PixelData = arr.tobytes()
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    _save(ds, path)
    return path


def write_nifti(path, array):
    nib.save(nib.Nifti1Image(np.asarray(array), np.eye(4)), path)
    return path


def grey(img: Image.Image) -> np.ndarray:
    assert img.mode == "RGB"
    arr = np.asarray(img)
    assert np.array_equal(arr[..., 0], arr[..., 2])  # greyscale stays grey
    return arr[..., 0].astype(int)


# HU values -1000, 0, 40, 80, 500, 60 stored as raw = HU + 1024.
RAW_CT = np.array([[24, 1024, 1064, 1104, 1524, 1084]], dtype=np.uint16)


# --------------------------------------------------------------------------- DICOM


def test_rescale_is_applied_before_the_window(tmp_path):
    path = write_dicom(tmp_path / "ct.dcm", RAW_CT, RescaleSlope=1, RescaleIntercept=-1024)
    out = grey(load_image(path, window=(40, 80)))[0]
    assert out[:2].tolist() == [0, 0]  # HU <= 0
    assert abs(out[2] - 128) <= 1  # HU 40, the centre
    assert out[3:5].tolist() == [255, 255]  # HU >= 80
    assert abs(out[5] - 191) <= 1  # HU 60, three quarters
    # Without the intercept the raw values 1024.. would all be above the window: white.
    plain = write_dicom(tmp_path / "raw.dcm", RAW_CT)
    assert grey(load_image(plain, window=(40, 80)))[0, 1:].tolist() == [255] * 5


def test_the_files_own_window_is_the_default(tmp_path):
    path = write_dicom(
        tmp_path / "ct.dcm",
        RAW_CT,
        RescaleSlope=1,
        RescaleIntercept=-1024,
        WindowCenter=[40, 400],  # multi-valued: the first one is used
        WindowWidth=[80, 2000],
    )
    assert np.array_equal(grey(load_image(path)), grey(load_image(path, window="brain")))
    assert not np.array_equal(grey(load_image(path)), grey(load_image(path, window="bone")))


def test_without_a_window_the_frame_min_max_is_used(tmp_path):
    path = write_dicom(tmp_path / "ct.dcm", RAW_CT, RescaleSlope=1, RescaleIntercept=-1024)
    out = grey(load_image(path))[0]
    assert out.min() == 0 and out.max() == 255
    assert abs(out[1] - round(1000 / 1500 * 255)) <= 1  # HU 0 between -1000 and 500


def test_named_windows_differ_and_match_their_tuples(tmp_path):
    ramp = (np.linspace(-1000, 1000, 200).reshape(10, 20) + 1024).astype(np.uint16)
    path = write_dicom(tmp_path / "ct.dcm", ramp, RescaleSlope=1, RescaleIntercept=-1024)
    images = {name: grey(load_image(path, window=name)) for name in WINDOWS}
    assert len({im.tobytes() for im in images.values()}) == len(WINDOWS)
    for name, (centre, width) in WINDOWS.items():
        assert np.array_equal(images[name], grey(load_image(path, window=(centre, width))))
    assert np.array_equal(images["lung"], grey(load_image(path, window="LUNG")))


def test_window_bounds():
    assert window_bounds("lung") == (-1350.0, 150.0)
    assert window_bounds((50, 350)) == (-125.0, 225.0)
    with pytest.raises(ImageLoadError, match="Unknown window 'liver'.*abdomen"):
        window_bounds("liver")
    with pytest.raises(ImageLoadError, match="width must be positive"):
        window_bounds((40, 0))
    with pytest.raises(ImageLoadError, match="not a name or a"):
        window_bounds((1, 2, 3))


def test_voi_lut_sequence_is_used(tmp_path):
    lut = Dataset()
    lut.LUTDescriptor = [4, 0, 8]  # 4 entries, first input 0, 8-bit output
    lut.add_new(0x00283006, "US", [255, 170, 85, 0])  # LUTData: an inverting LUT
    path = write_dicom(
        tmp_path / "voi.dcm", np.array([[0, 1, 2, 3]], dtype=np.uint16), VOILUTSequence=[lut]
    )
    assert grey(load_image(path))[0].tolist() == [255, 170, 85, 0]


def test_monochrome1_is_inverted(tmp_path):
    pixels = np.array([[0, 500, 1000]], dtype=np.uint16)
    mono2 = grey(load_image(write_dicom(tmp_path / "m2.dcm", pixels)))[0]
    mono1 = grey(load_image(write_dicom(tmp_path / "m1.dcm", pixels, photometric="MONOCHROME1")))
    assert mono1[0].tolist() == (255 - mono2).tolist()
    assert mono1[0, 0] == 255 and mono1[0, 2] == 0  # raw 0 is white


def test_rgb_stays_colour_and_refuses_a_window(tmp_path):
    rgb = np.zeros((4, 6, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[1, 1] = (0, 200, 30)
    path = write_dicom(tmp_path / "us.dcm", rgb)
    out = load_image(path)
    assert out.getpixel((0, 0)) == (255, 0, 0)
    assert out.getpixel((1, 1)) == (0, 200, 30)
    with pytest.raises(ValueError, match="window.*us.dcm.*colour"):
        load_image(path, window="lung")


def test_ybr_full_is_converted_to_rgb(tmp_path):
    from pydicom.pixels import convert_color_space

    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[..., 0] = 255  # all red
    rgb[2, 2] = (0, 0, 255)
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    out = np.asarray(load_image(write_dicom(tmp_path / "ybr.dcm", ybr, photometric="YBR_FULL")))
    assert np.abs(out[0, 0].astype(int) - (255, 0, 0)).max() <= 3
    assert np.abs(out[2, 2].astype(int) - (0, 0, 255)).max() <= 3


def test_palette_colour_is_applied(tmp_path):
    index = np.array([[0, 255, 128]], dtype=np.uint8)
    ramp = np.arange(256, dtype=np.uint16) * 257  # 16-bit palette entries
    attrs = {}
    for colour, data in (("Red", ramp), ("Green", np.zeros(256, np.uint16)), ("Blue", ramp[::-1])):
        attrs[f"{colour}PaletteColorLookupTableDescriptor"] = [256, 0, 16]
        attrs[f"{colour}PaletteColorLookupTableData"] = data.astype("<u2").tobytes()
    path = write_dicom(tmp_path / "pal.dcm", index, photometric="PALETTE COLOR", **attrs)
    out = load_image(path)
    assert out.getpixel((0, 0)) == (0, 0, 255)
    assert out.getpixel((1, 0)) == (255, 0, 0)
    assert out.getpixel((2, 0)) == (128, 0, 127)


def test_multi_frame_default_middle_frame_and_range(tmp_path):
    frames = np.stack([np.full((3, 4), 50 * k, dtype=np.uint16) for k in range(5)])
    path = write_dicom(tmp_path / "cine.dcm", frames, frames=True)
    window = (100, 200)  # 0..200 → frame k shows 50k as 64k
    assert abs(grey(load_image(path, window=window)).max() - 128) <= 1  # frame 2 of 0..4
    assert grey(load_image(path, window=window, frame=0)).max() == 0
    assert grey(load_image(path, window=window, frame=4)).max() == 255
    with pytest.raises(ImageLoadError, match="frame=5.*cine.dcm.*5 frame"):
        load_image(path, frame=5)
    with pytest.raises(ImageLoadError, match="frame=-1"):
        load_image(path, frame=-1)


def test_enhanced_multi_frame_rescale_from_functional_groups(tmp_path):
    item = Dataset()
    transform = Dataset()
    transform.RescaleSlope, transform.RescaleIntercept = 2, -100
    item.PixelValueTransformationSequence = [transform]
    frames = np.stack([np.full((2, 2), 70 + k, dtype=np.uint16) for k in range(3)])
    path = write_dicom(
        tmp_path / "enh.dcm", frames, frames=True, SharedFunctionalGroupsSequence=[item]
    )
    # frame 1 = 71 * 2 - 100 = 42 HU; without the rescale it would be 71 → 0..80 window
    assert grey(load_image(path, window=(40, 80)))[0, 0] == round(42 / 80 * 255)


def test_single_frame_accepts_frame_zero_only(tmp_path):
    path = write_dicom(tmp_path / "one.dcm", RAW_CT)
    assert load_image(path, frame=0).size == (6, 1)
    with pytest.raises(ImageLoadError, match="1 frame"):
        load_image(path, frame=1)


def test_dicom_found_by_marker_without_suffix(tmp_path):
    path = write_dicom(tmp_path / "IM000123", RAW_CT)
    assert load_image(path, window=(40, 80)).size == (6, 1)


# --------------------------------------------------------------------------- orientation

# Patient directions as LPS vectors (DICOM: x to the patient's left, y back, z to the head).
LEFT, RIGHT = np.array([1, 0, 0]), np.array([-1, 0, 0])
BACK, FRONT = np.array([0, 1, 0]), np.array([0, -1, 0])
HEAD, FEET = np.array([0, 0, 1]), np.array([0, 0, -1])
# Radiological display of each plane: where the viewer's right and "down" point in the patient.
# Sagittal: anterior on the viewer's left, as MR-TIP's standard display orientation
# (https://mr-tip.com, "Orientation": "sagittal: H to top of image and A to left").
PLANE_DISPLAY = {"axial": (LEFT, BACK), "coronal": (LEFT, FEET), "sagittal": (BACK, FEET)}
UNITS = [sign * np.eye(3, dtype=int)[k] for k in range(3) for sign in (1, -1)]
# Every axis-aligned ImageOrientationPatient: 6 row directions x 4 perpendicular columns.
AXIS_ALIGNED = [(r, c) for r in UNITS for c in UNITS if not (np.abs(r) & np.abs(c)).any()]


def _plane(row, col):
    normal = np.abs(np.cross(row, col)).argmax()
    return ("sagittal", "coronal", "axial")[normal]


def _position_coded_dicom(path, row, col, shape=(3, 5), **attrs):
    """A slice whose pixel values say where each pixel is: value = its stored index."""
    pixels = np.arange(shape[0] * shape[1], dtype=np.uint16).reshape(shape)
    orientation = [*map(int, row), *map(int, col)]
    return write_dicom(path, pixels, ImageOrientationPatient=orientation, **attrs), pixels


def _positions(img, shape, row, col):
    """The patient position (LPS, in pixels) of each displayed pixel, from its value."""
    index = np.rint(grey(img) * (shape[0] * shape[1] - 1) / 255).astype(int)
    i, j = np.divmod(index, shape[1])  # stored row and column
    return i[..., None] * col + j[..., None] * row  # the pixel position, per the DICOM standard


def _label(direction):  # "L" for [1, 0, 0]: the patient direction a row or column runs to
    return "LRPAHF"[[tuple(u) for u in UNITS].index(tuple(direction))]


@pytest.mark.parametrize(
    ("row", "col"),
    AXIS_ALIGNED,
    ids=[f"rows_to_{_label(r)}-cols_to_{_label(c)}" for r, c in AXIS_ALIGNED],
)
def test_every_axis_aligned_dicom_is_shown_radiologically(tmp_path, row, col):
    shape = (3, 5)
    path, _ = _position_coded_dicom(tmp_path / "slice.dcm", row, col, shape)
    img = load_image(path, window=(7, 14))  # 0..14 → 0..255, one grey level per pixel
    where = _positions(img, shape, row, col)
    to_right, down = PLANE_DISPLAY[_plane(row, col)]
    assert (where[:, 1:] - where[:, :-1] == to_right).all()  # one step right on the screen
    assert (where[1:] - where[:-1] == down).all()  # one step down on the screen
    assert sorted(img.size) == [3, 5]  # nothing lost, at most transposed


def test_upside_down_axial_slice_is_turned_anterior_up(tmp_path):
    """As in the abdomen CT sample: rows run to the patient's left, columns to the front."""
    pixels = np.zeros((4, 6), dtype=np.uint16)
    pixels[3, 0] = 1000  # last stored row = most anterior; column 0 = the patient's right
    pixels[0, 5] = 500  # posterior, patient's left
    path = write_dicom(tmp_path / "ct.dcm", pixels, ImageOrientationPatient=[1, 0, 0, 0, -1, 0])
    shown = grey(load_image(path))
    assert shown[0, 0] == 255  # anterior up, the patient's right on the viewer's left
    assert shown[3, 5] == 128  # posterior-left: bottom right
    stored = grey(load_image(path, orientation="stored"))
    assert stored[3, 0] == 255 and stored[0, 5] == 128  # the file's own order


def test_sagittal_slice_faces_left(tmp_path):
    """Stored facing right and upside down (rows to the front, columns to the head)."""
    pixels = np.zeros((4, 6), dtype=np.uint16)
    pixels[3, 5] = 1000  # most superior and most anterior: the forehead
    path = write_dicom(tmp_path / "mr.dcm", pixels, ImageOrientationPatient=[0, -1, 0, 0, 0, 1])
    assert grey(load_image(path))[0, 0] == 255  # top left: head up, face on the left


def test_orientation_without_or_with_oblique_direction_cosines(tmp_path):
    pixels = np.arange(12, dtype=np.uint16).reshape(3, 4)
    plain = grey(load_image(write_dicom(tmp_path / "none.dcm", pixels)))
    axial = write_dicom(tmp_path / "s.dcm", pixels, ImageOrientationPatient=[1, 0, 0, 0, 1, 0])
    assert np.array_equal(plain, grey(load_image(axial)))  # the standard axial order is kept
    oblique = [0.7071, 0.7071, 0, 0, 0, -1]  # 45° between left and back
    path = write_dicom(tmp_path / "oblique.dcm", pixels, ImageOrientationPatient=oblique)
    with pytest.warns(UserWarning, match="oblique.dcm.*oblique.*orientation='stored'"):
        assert np.array_equal(grey(load_image(path)), plain)  # as stored
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asked for the stored order: no warning
        assert np.array_equal(grey(load_image(path, orientation="stored")), plain)
    with pytest.raises(ImageLoadError, match="orientation='neurological'.*'stored'"):
        load_image(tmp_path / "none.dcm", orientation="neurological")


def _rotation(axis, degrees):
    """Rodrigues' rotation matrix about ``axis`` (any non-zero vector)."""
    k = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    t = np.radians(degrees)
    return np.eye(3) + np.sin(t) * cross + (1 - np.cos(t)) * cross @ cross


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    which=st.integers(0, len(AXIS_ALIGNED) - 1),
    axis=st.tuples(*[st.floats(-1, 1)] * 3).filter(lambda v: np.linalg.norm(v) > 0.1),
    degrees=st.floats(0, 30),
)
def test_tilted_slices_are_shown_like_their_axis_aligned_plane(tmp_path, which, axis, degrees):
    """A gantry tilt or a slightly angled MR slice (up to 30°) displays as its plane."""
    row, col = AXIS_ALIGNED[which]
    turn = _rotation(axis, degrees)
    pixels = np.arange(15, dtype=np.uint16).reshape(3, 5)
    straight = write_dicom(tmp_path / "a.dcm", pixels, ImageOrientationPatient=[*row, *col])
    tilted = [f"{v:.6f}" for v in (*(turn @ row), *(turn @ col))]
    path = write_dicom(tmp_path / "t.dcm", pixels, ImageOrientationPatient=tilted)
    assert np.array_equal(np.asarray(load_image(path)), np.asarray(load_image(straight)))


def test_enhanced_multi_frame_orientation_from_functional_groups(tmp_path):
    plane = Dataset()
    plane.ImageOrientationPatient = [1, 0, 0, 0, -1, 0]  # anterior at the bottom, as stored
    item = Dataset()
    item.PlaneOrientationSequence = [plane]
    frames = np.zeros((2, 3, 3), dtype=np.uint16)
    frames[:, 2, 1] = 100  # the most anterior row
    path = write_dicom(
        tmp_path / "enh.dcm", frames, frames=True, SharedFunctionalGroupsSequence=[item]
    )
    assert grey(load_image(path))[0, 1] == 255  # anterior up


def test_dicom_and_nifti_agree_on_orientation(tmp_path):
    """One axial slice written as NIfTI (RAS+) and as DICOM (LPS) looks the same."""
    volume = np.zeros((5, 7, 3), dtype=np.int16)  # x: right, y: front, z: up (identity affine)
    volume[4, 6, 1] = 300  # the patient's right front corner of the middle slice
    volume[0, 1, 1] = 100  # near the left back corner
    nifti = load_image(write_nifti(tmp_path / "vol.nii", volume), window=(150, 300))
    # DICOM rows run to the patient's right (-x), columns to the front (-y): pixel [r, c] is
    # voxel (x = c, y = r) of the volume.
    slice_ = volume[:, :, 1].T.astype(np.uint16)
    path = write_dicom(tmp_path / "ax.dcm", slice_, ImageOrientationPatient=[-1, 0, 0, 0, -1, 0])
    dicom = load_image(path, window=(150, 300))
    assert np.array_equal(np.asarray(nifti), np.asarray(dicom))
    assert grey(dicom)[0, 0] == 255  # right front: top left


# --------------------------------------------------------------------------- NIfTI


@pytest.mark.parametrize(("axis", "size"), [(0, (12, 14)), (1, (10, 14)), (2, (10, 12))])
def test_nifti_middle_slice_along_each_axis(tmp_path, axis, size):
    volume = np.random.default_rng(0).normal(size=(10, 12, 14))
    path = write_nifti(tmp_path / "vol.nii", volume)
    out = load_image(path, axis=axis)
    assert out.size == size  # width = first in-plane axis, height = second
    middle = np.take(volume, volume.shape[axis] // 2, axis=axis)[::-1, ::-1].T  # radiological
    other = np.take(volume, 0, axis=axis)[::-1, ::-1].T
    assert np.corrcoef(grey(out).ravel(), middle.ravel())[0, 1] > 0.95
    assert abs(np.corrcoef(grey(out).ravel(), other.ravel())[0, 1]) < 0.5


def test_nifti_slice_index_orientation_and_range(tmp_path):
    volume = np.zeros((8, 9, 10), dtype=np.int16)
    volume[:, :, 3] = 10
    volume[0, 8, 3] = 100  # x = 0 (patient's left in RAS+), y = max (anterior)
    path = write_nifti(tmp_path / "vol.nii", volume)
    out = grey(load_image(path, slice_index=3))
    assert out.shape == (9, 8)
    assert out[0, 7] == 255  # anterior at the top, the patient's left on the viewer's right
    assert out[1:, :].max() < 255
    stored = grey(load_image(path, slice_index=3, orientation="stored"))
    assert stored.shape == (8, 9) and stored[0, 8] == 255  # the voxel array as it is
    assert grey(load_image(path, slice_index=4)).max() == 0
    with pytest.raises(ImageLoadError, match="slice_index=10.*vol.nii.*10 slices along axis 2"):
        load_image(path, slice_index=10)
    with pytest.raises(ImageLoadError, match="axis=3"):
        load_image(path, axis=3)
    with pytest.raises(ImageLoadError, match="frame=1.*3-D NIfTI"):
        load_image(path, frame=1)


def test_nifti_four_d_first_volume_or_frame(tmp_path):
    volume = np.zeros((6, 6, 6, 3), dtype=np.float32)
    for t in range(3):
        volume[t, 0, 3, t] = 1.0  # volume t has a bright voxel at x = t, y = 0 (posterior)
    path = write_nifti(tmp_path / "fmri.nii", volume)
    for t in (None, 0, 2):
        out = grey(load_image(path, frame=t))
        assert out[5, 5 - (t or 0)] == 255 and out.sum() == 255  # bottom row, x mirrored
    with pytest.raises(ImageLoadError, match="frame=3.*3 volumes"):
        load_image(path, frame=3)


@pytest.mark.parametrize(
    ("axis", "marker", "corner"),
    [
        (0, (2, 5, 6), "face on the left"),  # sagittal: y = 5 front, z = 6 top → top left
        (1, (4, 2, 6), "patient's right on the left"),  # coronal: x = 4 right, top → top left
        (2, (4, 5, 3), "patient's right on the left"),  # axial: right front → top left
    ],
)
def test_nifti_planes_are_radiological(tmp_path, axis, marker, corner):
    volume = np.zeros((5, 6, 7), dtype=np.int16)  # RAS+ (identity affine)
    volume[marker] = 100
    index = marker[axis]
    out = grey(load_image(write_nifti(tmp_path / "v.nii", volume), axis=axis, slice_index=index))
    assert out[0, 0] == 255, corner


def test_nifti_gz_matches_nii(tmp_path):
    volume = np.random.default_rng(1).integers(0, 4000, (7, 8, 9)).astype(np.int16)
    plain = write_nifti(tmp_path / "vol.nii", volume)
    packed = write_nifti(tmp_path / "vol.nii.gz", volume)
    assert gzip.open(packed).read(4)  # really gzip
    assert np.array_equal(np.asarray(load_image(plain)), np.asarray(load_image(packed)))


def test_nifti_robust_scaling_ignores_an_outlier(tmp_path):
    volume = np.random.default_rng(2).normal(100, 10, (40, 40, 5))
    volume[20, 20, 2] = 1e6  # one extreme voxel in the middle slice
    out = grey(load_image(write_nifti(tmp_path / "vol.nii", volume)))
    assert (out > 0).mean() > 0.9
    assert 100 < np.median(out) < 156
    assert out.max() == 255


def test_nifti_window_in_hounsfield_units(tmp_path):
    volume = np.full((4, 4, 3), 40, dtype=np.int16)
    volume[0] = -1000
    out = grey(load_image(write_nifti(tmp_path / "ct.nii.gz", volume), window="brain"))
    assert set(np.unique(out)) == {0, 128}


def test_two_d_nifti(tmp_path):
    path = write_nifti(tmp_path / "flat.nii", np.arange(20.0).reshape(4, 5))
    assert load_image(path).size == (4, 5)
    with pytest.raises(ValueError, match="slice_index=0.*flat.nii"):
        load_image(path, slice_index=0)


# --------------------------------------------------------------------------- plain files


def test_sixteen_bit_png_is_rescaled(tmp_path):
    path = tmp_path / "sixteen.png"
    Image.fromarray(np.linspace(0, 1000, 64 * 48).reshape(48, 64).astype(np.uint16)).save(path)
    out = grey(load_image(path))
    assert out.min() == 0 and out.max() == 255 and len(np.unique(out)) > 200


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"window": "lung"}, "window"), ({"frame": 0}, "frame"), ({"slice_index": 1}, "slice_index")],
)
def test_arguments_that_do_not_apply_to_a_png(tmp_path, kwargs, name):
    path = tmp_path / "photo.png"
    Image.new("RGB", (4, 4)).save(path)
    with pytest.raises(ValueError, match=f"{name}=.*photo.png"):
        load_image(path, **kwargs)


def test_arguments_that_do_not_apply_to_dicom(tmp_path):
    path = write_dicom(tmp_path / "ct.dcm", RAW_CT)
    with pytest.raises(ValueError, match="slice_index=2.*ct.dcm.*DICOM"):
        load_image(path, slice_index=2)
    with pytest.raises(ValueError, match="axis=0.*ct.dcm"):
        load_image(path, axis=0)


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    png = tmp_path / "big.png"
    Image.new("L", (100, 100)).save(png)
    dcm = write_dicom(tmp_path / "big.dcm", np.zeros((100, 100), np.uint16))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)
    for path in (png, dcm):
        with pytest.raises(ImageLoadError, match=f"{path.name} is larger than Pillow's safety"):
            to_rgb(path)


# --------------------------------------------------------------------------- errors


def test_truncated_dicom(tmp_path):
    path = write_dicom(tmp_path / "cut.dcm", np.zeros((64, 64), np.uint16))
    path.write_bytes(path.read_bytes()[:-3000])
    with pytest.raises(ImageLoadError, match="cut.dcm.*truncated or corrupt"):
        load_image(path)


def test_dicom_without_pixel_data(tmp_path):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Modality = "SR"
    _save(ds, tmp_path / "report.dcm")
    with pytest.raises(ImageLoadError, match="report.dcm has no pixel data.*image files"):
        load_image(tmp_path / "report.dcm")


def test_text_file_named_dcm(tmp_path):
    path = tmp_path / "notes.dcm"
    path.write_text("patient notes, not an image\n" * 20)
    with pytest.raises(ImageLoadError, match="notes.dcm is not a DICOM file"):
        to_rgb(path)


def test_text_file_named_nii(tmp_path):
    path = tmp_path / "notes.nii"
    path.write_text("not a volume\n" * 40)
    with pytest.raises(ImageLoadError, match="notes.nii is not a NIfTI file"):
        load_image(path)


def test_truncated_nifti_gz(tmp_path):
    volume = np.random.default_rng(4).normal(size=(30, 30, 30)).astype(np.float32)
    path = write_nifti(tmp_path / "cut.nii.gz", volume)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])  # before the middle slice
    with pytest.raises(ImageLoadError, match="cut.nii.gz.*truncated or corrupt"):
        load_image(path)


def _encapsulated(path, syntax, fragment):
    """A file whose transfer syntax is compressed and whose data is ``fragment``."""
    data = pydicom.encaps.encapsulate([fragment])
    return write_dicom(path, np.zeros((8, 8), np.uint16), syntax=syntax, PixelData=data)


def _jpeg2000_with_garbage(path):
    return _encapsulated(path, JPEG2000, b"\xff\x4f\xff\x51" + b"\x00" * 60)


def test_compressed_dicom_without_a_decoder_names_the_package(tmp_path, monkeypatch):
    from pydicom.pixels import get_decoder

    decoder = get_decoder(JPEG2000)
    monkeypatch.setattr(decoder, "_available", {})  # as if no codec were installed
    monkeypatch.setattr(
        decoder, "_unavailable", {"pylibjpeg": ("pylibjpeg>=2.0", "pylibjpeg-openjpeg>=2.0")}
    )
    path = _jpeg2000_with_garbage(tmp_path / "j2k.dcm")
    with pytest.raises(ImageLoadError, match="j2k.dcm is compressed.*JPEG 2000") as info:
        load_image(path)
    assert "pip install pylibjpeg pylibjpeg-openjpeg" in str(info.value)
    assert "python-gdcm" in str(info.value)


def test_corrupt_compressed_dicom(tmp_path):
    path = _jpeg2000_with_garbage(tmp_path / "bad_j2k.dcm")
    # With a decoder installed the data is corrupt; without one the message says what to
    # install. Either way the file is named and a next step is given.
    with pytest.raises(ImageLoadError, match="bad_j2k.dcm.*(corrupt|pip install)"):
        load_image(path)


def test_transfer_syntax_nobody_decodes(tmp_path):
    path = _encapsulated(tmp_path / "video.dcm", MPEG2MPML, b"\x00" * 64)
    with pytest.raises(ImageLoadError, match="video.dcm.*(MPEG2|python-gdcm)"):
        load_image(path)


# --------------------------------------------------------------------------- integration


def test_to_rgb_reads_dicom_and_nifti_paths(tmp_path):
    dcm = write_dicom(tmp_path / "ct.dcm", RAW_CT, RescaleSlope=1, RescaleIntercept=-1024)
    nii = write_nifti(tmp_path / "vol.nii.gz", np.arange(60.0).reshape(3, 4, 5))
    for path in (dcm, str(dcm), nii):
        assert to_rgb(path).mode == "RGB"
    assert to_rgb(dcm).size == (6, 1) and to_rgb(nii).size == (3, 4)


def test_encode_images_takes_dicom_and_nifti(tmp_path, tiny_model):
    dcm = write_dicom(
        tmp_path / "ct.dcm", (np.arange(64 * 64).reshape(64, 64) % 2000).astype(np.uint16)
    )
    nii = write_nifti(tmp_path / "vol.nii.gz", np.random.default_rng(3).normal(size=(32, 32, 8)))
    assert tiny_model.encode_images([dcm, nii]).shape[0] == 2


def _sample(name):
    """A file shipped with pydicom (or pydicom-data), or skip."""
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not installed with pydicom")
    return path


def test_pydicom_sample_ct():
    path = _sample("CT_small.dcm")
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = np.clip(np.rint((hu - (400 - 900)) / 1800 * 255), 0, 255)
    out = grey(load_image(path, window="bone"))
    assert out.shape == (128, 128) and np.abs(out - expected).max() <= 1


def test_pydicom_sample_compressed_matches_uncompressed():
    plain = np.asarray(load_image(_sample("MR_small.dcm")))
    try:
        packed = np.asarray(load_image(_sample("MR_small_jp2klossless.dcm")))
    except ImageLoadError as err:
        assert "pip install" in str(err)
        pytest.skip(str(err))
    assert np.array_equal(plain, packed)  # lossless JPEG 2000


def test_pydicom_sample_ybr_is_colour():
    arr = np.asarray(load_image(_sample("SC_ybr_full_422_uncompressed.dcm"))).astype(int)
    assert arr.shape == (100, 100, 3)
    assert np.abs(arr[..., 0] - arr[..., 2]).max() > 100  # colour, not grey


_ROWS_COLS = st.tuples(st.integers(1, 8), st.integers(1, 8))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    shape=_ROWS_COLS,
    seed=st.integers(0, 2**32 - 1),
    slope=st.floats(0.01, 10),
    intercept=st.floats(-4000, 4000),
    window=st.none()
    | st.sampled_from(sorted(WINDOWS))
    | st.tuples(st.floats(-2000, 2000), st.floats(1, 4000)),
    monochrome1=st.booleans(),
)
def test_any_small_ct_loads(tmp_path, shape, seed, slope, intercept, window, monochrome1):
    pixels = (
        np.random.default_rng(seed).integers(-32768, 32767, shape, endpoint=True).astype(np.int16)
    )
    path = write_dicom(
        tmp_path / "h.dcm",
        pixels,
        photometric="MONOCHROME1" if monochrome1 else None,
        RescaleSlope=f"{slope:.6g}",
        RescaleIntercept=f"{intercept:.6g}",
    )
    img = load_image(path, window=window)
    assert img.mode == "RGB" and img.size == (shape[1], shape[0])
    if window is not None:  # the output is monotone in the modality value (HU)
        values = pixels.astype(float) * float(f"{slope:.6g}") + float(f"{intercept:.6g}")
        out = grey(img).ravel()
        order = np.argsort(values.ravel(), kind="stable")
        steps = np.diff(out[order])
        assert np.all(steps <= 0) if monochrome1 else np.all(steps >= 0)
