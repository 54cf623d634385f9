"""The phantom's anatomy on the image grid and its bSSFP appearance: the polar radius tables of LV, myocardium and
RV per slice and frame (`heart_tables`), the chest around the heart (`thorax`), each frame rendered with partial
volume, coil bias and Rician noise (`render`), and the RV insertion points read off the tables
(`insertion_points`). `cardiolab.data.phantom` samples the hearts and writes the cohorts.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

N_THETA = 360                    # polar table bins: 1 degree is < 1 mm of arc at the largest radii
THETA = -np.pi + (np.arange(N_THETA) + 0.5) * (2 * np.pi / N_THETA)
D_THETA = 2 * np.pi / N_THETA

# Relative bSSFP signal (LV blood = 1) before the coil bias field. Calibrated so that `prepare`'s percentile
# scaling to [-1, 1] lands near real ACDC means over labelled frames (measured on real ACDC: LV blood 0.15, myocardium
# -0.52, RV blood -0.16, background -0.50): fat as bright as blood or brighter (it sets the 99.5th percentile
# with the coil's hot spot at the chest wall), muscle and myocardium dark, lungs and air darkest.
SIGNAL = dict(blood=1.0, myo=0.3, fat=1.25, muscle=0.27, tissue=0.35, lung=0.04, liver=0.5, bone=0.5,
              cortex=0.12, csf=1.15, aorta=1.05)
TISSUES = ("air", "tissue", "fat", "muscle", "lung", "liver", "bone", "csf", "aorta")   # `thorax` tissue map
SCANNER_SCALE = 1000.0           # written as integer-valued magnitudes like a scanner's

# World (RAS+) geometry of the short-axis stack. The LV long axis points from base to apex towards the
# patient's left, anterior and inferior; the RV lies to the right and anterior of the LV. The in-plane voxel
# axes are turned so that, once `prepare` has made them point along increasing world axes, the RV sits at
# RV_ANGLE_DEG from the LV as measured on real ACDC (median 110 deg, 10-90 % range 51-137 deg).
LONG_AXIS_RAS = (-0.6, 0.55, -0.6)
RV_DIRECTION_RAS = (1.0, 1.0, 0.0)
RV_ANGLE_DEG = 110.0             # image angle: 0 deg = +y (column), 90 deg = +x (row)


def sax_axes() -> np.ndarray:
    """(3, 3) world unit vectors (columns) of voxel x, voxel y and the slice axis (base -> apex)."""
    n = np.asarray(LONG_AXIS_RAS, float)
    n /= np.linalg.norm(n)
    w = np.asarray(RV_DIRECTION_RAS, float)
    w -= (w @ n) * n
    w /= np.linalg.norm(w)
    p = np.cross(n, w)
    a = np.deg2rad(RV_ANGLE_DEG)
    # w = sin(a) x + cos(a) y in the voxel grid, with x and y pointing along increasing world axes
    x, y = np.sin(a) * w + np.cos(a) * p, np.cos(a) * w - np.sin(a) * p
    return np.stack([x, y, n], axis=1)


def smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0, 1)
    return x * x * (3 - 2 * x)


def _angle_diff(a, b):
    return (np.asarray(a) - b + np.pi) % (2 * np.pi) - np.pi


def solve_quadratic(a2, a1, a0):
    """Positive root of a2 x^2 + a1 x + a0 = 0 (a2 > 0, a0 <= 0)."""
    return (-a1 + np.sqrt(np.maximum(a1 * a1 - 4 * a2 * a0, 0))) / (2 * a2)


def heart_tables(p: dict, slices: int, c: np.ndarray, z_shift: float = 0.0) -> dict:
    """Polar boundary tables of one beat, each (D, T, N_THETA) in mm, plus LV centres (D, T, 2) in mm.

    r_endo / r_epi: LV endo- and epicardial radius; tau: RV crescent depth beyond the epicardium;
    w: (D, T) position along the long axis, 0 at the base and 1 at the apex.
    c: (T,) contraction curve. Volumes are sums of slice areas times the slice thickness.
    z_shift: mm added to every slice position (sub-slices for through-plane partial volume).
    """
    D, sz = slices, p["slice_thickness"]
    z = (np.arange(D) + 0.5) * sz + z_shift            # slice centres from the top of the stack
    z_apex = (D - 0.2) * sz                            # the apex stays put; the base moves towards it
    z_base = -0.6 * sz + p["base_descent"] * c         # (T,)
    w = (z[:, None] - z_base) / (z_apex - z_base)      # (D, T): 0 at the base, 1 at the apex
    h = np.sqrt(np.clip(1 - w**2, 0, None))            # prolate spheroid profile

    # In-plane shape: a rotated ellipse of area pi r^2 with small harmonic wobble.
    ang = THETA - p["ellipse_angle"]
    e = p["eccentricity"]
    shape = 1 / np.sqrt((np.cos(ang) / e) ** 2 + (np.sin(ang) * e) ** 2)
    for n, (a, ph) in enumerate(zip(p["harmonics"], p["harmonic_phases"]), start=2):
        shape = shape * (1 + a * np.cos(n * THETA + ph))

    m = np.zeros((D, N_THETA))                         # akinetic (infarcted) share of each angle
    if p["infarct"]:
        inf = p["infarct"]
        sector = np.clip((inf["half_width"] - np.abs(_angle_diff(THETA, inf["centre"]))) / np.deg2rad(15), 0, 1)
        m = np.clip((w[:, :1] - inf["start"]) / 0.1, 0, 1) * sector

    # Cavity: r = R(t) u + v, v frozen at its ED radius where akinetic; solve R(t) for the target volume.
    u = shape * h[..., None] * (1 - m[:, None])
    v = p["radius"] * shape * h[:, :1, None] * m[:, None]
    a2, a1, a0 = (0.5 * D_THETA * (u * u).sum((0, 2)), D_THETA * (u * v).sum((0, 2)),
                  0.5 * D_THETA * (v * v).sum((0, 2)))
    area_ed = a2[0] * p["radius"] ** 2 + a1[0] * p["radius"] + a0[0]
    R = solve_quadratic(a2, a1, a0 - area_ed * (1 - p["ef"] / 100 * c))
    r_endo = R[:, None] * u + v

    # Wall: thickness th0 (m + (1 - m) g(t)); g solved so the myocardial area sum stays at its ED value.
    septal = np.clip(np.cos(_angle_diff(THETA, p["septum"])), 0, None)
    cap = (w >= 0) * np.clip((1.08 - w) / 0.08, 0, 1)  # no wall above the base; a thin cap beyond the apex
    th0 = (p["wall"] * (1 - 0.3 * w[:, :1, None] ** 2) * (1 + p["asymmetry"] * septal) * (1 - 0.35 * m[:, None])
           * cap[..., None])
    a, b = th0 * m[:, None], th0 * (1 - m[:, None])
    m0 = D_THETA * (r_endo * a + a * a / 2).sum((0, 2))
    m1 = D_THETA * (r_endo * b + a * b).sum((0, 2))
    m2 = D_THETA * np.broadcast_to(b * b / 2, r_endo.shape).sum((0, 2))
    g = solve_quadratic(m2, m1, m0 - (m0[0] + m1[0] + m2[0]))
    r_epi = r_endo + a + b * g[:, None]

    # RV: a crescent on the septal side, depth tau = s(t) * profile; s solved for the RV volume curve.
    bump = np.clip(1 - (_angle_diff(THETA, p["septum"]) / p["rv_span"]) ** 2, 0, None) ** 0.8
    reach = np.sqrt(np.clip(1 - (w / p["rv_reach"]) ** 2, 0, None))
    tau_shape = p["rv"] * (reach * (w >= 0))[..., None] * bump
    b1, b2 = D_THETA * (r_epi * tau_shape).sum((0, 2)), 0.5 * D_THETA * (tau_shape**2).sum((0, 2))
    s = solve_quadratic(b2, b1, -(b1[0] + b2[0]) * (1 - p["rv_ef"] / 100 * c))
    tau = s[:, None] * tau_shape

    k = np.arange(D)[:, None, None] - (D - 1) / 2
    centre = np.asarray(p["offset"]) + k * np.asarray(p["tilt"]) + c[None, :, None] * np.asarray(p["drift"])
    analytic = {name: sz / 1000 * (0.5 * D_THETA * val).sum((0, 2)) for name, val in
                (("LV", r_endo**2), ("MYO", r_epi**2 - r_endo**2), ("RV", (r_epi + tau) ** 2 - r_epi**2))}
    return dict(r_endo=r_endo, r_epi=r_epi, tau=tau, centre=centre, w=w, analytic_ml=analytic)


def _smooth_noise(rng: np.random.Generator, shape: tuple, sigma_px: float) -> np.ndarray:
    """Unit-variance smooth random field, smoothed in-plane only: (D, X, Y)."""
    f = gaussian_filter(rng.standard_normal(shape), sigma=(0, sigma_px, sigma_px), mode="wrap")
    return f / (f.std() + 1e-8)


def _occupancy(signed_mm: np.ndarray, spacing: float) -> np.ndarray:
    """Partial-volume fraction of a pixel whose centre lies `signed_mm` inside a boundary."""
    return np.clip(0.5 + signed_mm / spacing, 0, 1)


def _blend(img: np.ndarray, occ: np.ndarray, value) -> np.ndarray:
    return img + occ * (value - img)


def _blob(x, y, cx, cy, ax, ay, wobble, phases) -> np.ndarray:
    """Signed distance (mm, positive inside) to an ellipse with a wobbly boundary; x, y in one frame, ax, ay
    its semi-axes along that frame's axes."""
    dx, dy = x - cx, y - cy
    ang = np.arctan2(dy, dx)
    rad = 1 / np.sqrt((np.cos(ang) / ax) ** 2 + (np.sin(ang) / ay) ** 2)
    for n, ph in enumerate(phases, start=2):
        rad = rad * (1 + wobble * np.cos(n * ang + ph))
    return rad - np.hypot(dx, dy)


def _disc(x, y, cx, cy, radius) -> np.ndarray:
    return radius - np.hypot(x - cx, y - cy)


def anatomy_frame() -> tuple[np.ndarray, np.ndarray]:
    """In-plane unit vectors (voxel x, y components) pointing to the patient's right and anterior.

    Anterior is the world +y axis projected into the slice plane; right is the in-plane perpendicular on
    the side of world +x (the plane is oblique, so the projected axes are not exactly perpendicular).
    """
    axes = sax_axes()
    ant = axes[1, :2] / np.linalg.norm(axes[1, :2])
    right = np.array([ant[1], -ant[0]])
    return (right if right @ axes[0, :2] > 0 else -right), ant


def _extent(tables: dict, direction: np.ndarray) -> float:
    """How far (mm) the ED heart (epicardium + RV) reaches from the LV centre towards `direction`."""
    reach = (tables["r_epi"][:, 0] + tables["tau"][:, 0]) * np.cos(THETA - np.arctan2(direction[1], direction[0]))
    return float(reach.max())


def thorax(p: dict, tables: dict, rng: np.random.Generator, slices: int, size: int, spacing: float) -> dict:
    """The chest around the heart, static over the beat; arrays are (D, X, Y) float32.

    static: body (skin, subcutaneous fat, chest-wall muscle), mediastinal tissue and fat, spine (vertebral
    body, cortex, spinal canal), paraspinal muscle and the descending aorta beside the spine, air outside;
    organs / organ_signal: lungs either side of the heart and the liver (right, inferior: apical slices),
    which the beating heart pushes (`render` carves them around the heart in every frame);
    bias: the coil sensitivity (brighter towards the anterior chest wall), applied to the whole image;
    tissue: uint8 index into TISSUES of the structure that dominates each voxel (before the heart is drawn).
    """
    D = slices
    xs = (np.arange(size) - (size - 1) / 2) * spacing
    k = (np.arange(D)[:, None, None] + 0.5) / D                       # 0 at the base, 1 at the apex
    right, ant = anatomy_frame()
    x0, y0 = xs[None, :, None] - p["offset"][0], xs[None, None, :] - p["offset"][1]
    r, a = x0 * right[0] + y0 * right[1], x0 * ant[0] + y0 * ant[1]  # mm from the LV centre: right, anterior
    tex = _smooth_noise(rng, (D, size, size), 4.0 / spacing)
    ph = lambda n: rng.uniform(0, 2 * np.pi, n)                       # noqa: E731 (wobble phases)

    img = SIGNAL["tissue"] * (1 + 0.12 * tex)
    tissue = np.full(img.shape, TISSUES.index("tissue"), np.uint8)

    def paint(img, occ, value, name):   # blend a structure in and record where it dominates
        tissue[np.broadcast_to(occ > 0.5, tissue.shape)] = TISSUES.index(name)
        return _blend(img, occ, value)

    # Body: an ellipse whose anterior wall sits a little in front of the heart, centred right of it.
    fat_mm = float(np.clip(1.2 * (p["bmi"] - 17) + rng.uniform(2, 6), 4, 30))
    muscle_mm = float(rng.uniform(6, 12))
    # The back stays 13-16 cm behind the LV centre whatever the heart's size; a big heart deepens the chest.
    front = _extent(tables, ant) + rng.uniform(3, 12) + muscle_mm + fat_mm
    back, lat = -rng.uniform(130, 160) - fat_mm, rng.uniform(150, 175)
    ap = (front - back) / 2
    depth = _blob(r, a, rng.uniform(20, 35), (front + back) / 2, lat, ap, 0.02, ph(2))
    img = paint(img, _occupancy(-(depth - fat_mm - muscle_mm), spacing), SIGNAL["muscle"] * (1 + 0.1 * tex),
                "muscle")
    img = paint(img, _occupancy(-(depth - fat_mm), spacing), SIGNAL["fat"] * (1 + 0.05 * tex), "fat")
    # Mediastinal fat in front of the heart.
    pad = _blob(r, a, rng.uniform(-5, 20), _extent(tables, ant) + 3, rng.uniform(20, 35), rng.uniform(2.5, 5),
                0.15, ph(3))
    img = paint(img, _occupancy(pad, spacing), SIGNAL["fat"] * (1 + 0.05 * tex), "fat")
    # Descending aorta behind the heart, left of the spine; the spine behind and right of it.
    ao_r, ao_mm = rng.uniform(-25, -10), rng.uniform(10, 13.5)
    ao_a = -(_extent(tables, -ant) + rng.uniform(6, 14) + ao_mm)
    sp_r, sp_a, sp_mm = ao_r + rng.uniform(18, 26), ao_a - rng.uniform(16, 24), rng.uniform(14, 18)
    for side in (-1, 1):                                               # paraspinal muscles
        img = paint(img, _occupancy(_blob(r, a, sp_r + side * 30, sp_a - 40, 22, 30, 0.05, ph(2)), spacing),
                    SIGNAL["muscle"] * (1 + 0.1 * tex), "muscle")
    vert = _disc(r, a, sp_r, sp_a, sp_mm)
    img = paint(img, _occupancy(vert, spacing), SIGNAL["cortex"], "bone")
    img = paint(img, _occupancy(vert - 2.0, spacing), SIGNAL["bone"] * (1 + 0.15 * tex), "bone")
    img = paint(img, _occupancy(_disc(r, a, sp_r, sp_a - sp_mm - 9, 6.5), spacing), SIGNAL["csf"], "csf")
    aorta = _disc(r, a, ao_r, ao_a, ao_mm)
    img = paint(img, _occupancy(aorta + 1.5, spacing), SIGNAL["muscle"], "muscle")           # aortic wall
    img = paint(img, _occupancy(aorta, spacing), SIGNAL["aorta"] * rng.uniform(0.9, 1.1), "aorta")
    img = paint(img, _occupancy(-depth, spacing), 0.0, "air")                                 # outside the body

    # Organs the heart pushes: lungs left and right of it (overlapping its ED outline, so the heart's own
    # boundary carves them), the liver right-inferior on apical slices (the plane moves inferior to the apex).
    inner = _occupancy(depth - fat_mm - muscle_mm - 2, spacing)
    keep_out = np.minimum(-aorta - 4, -vert - 12)
    lungs = np.zeros_like(img)
    for side, dist in ((-1, rng.uniform(10, 25)), (1, _extent(tables, right) - rng.uniform(5, 15))):
        half = rng.uniform(55, 70)
        lung = _blob(r, a, side * (dist + half), rng.uniform(-45, -25), half, rng.uniform(75, 90), 0.08, ph(3))
        lungs = np.maximum(lungs, _occupancy(np.minimum(lung - 12 * k, keep_out), spacing))
    grow = np.clip((k - rng.uniform(0.1, 0.35)) / 0.4, 0, 1)
    liver = _occupancy(_blob(r, a, rng.uniform(50, 70), rng.uniform(-40, -20), 80 * grow + 1e-3, 60 * grow + 1e-3,
                             0.05, ph(2)), spacing) * inner
    organs = np.maximum(lungs * inner, liver)
    organ_signal = np.where(liver > lungs, SIGNAL["liver"] * (1 + 0.06 * tex), SIGNAL["lung"] * (1 + 0.5 * tex))
    organs, liver = np.broadcast_arrays(organs, liver)
    tissue[organs > 0.5] = np.where(liver > 0.5, TISSUES.index("liver"), TISSUES.index("lung"))[organs > 0.5]

    bias = _coil_bias(rng, r, a, front, back, size, spacing)
    f32 = lambda v: np.ascontiguousarray(v, dtype=np.float32)         # noqa: E731
    return dict(static=f32(img), organs=f32(organs), organ_signal=f32(organ_signal),
                bias=f32(np.broadcast_to(bias, img.shape)), tissue=tissue)


def _coil_bias(rng: np.random.Generator, r: np.ndarray, a: np.ndarray, front: float, back: float, size: int,
               spacing: float) -> np.ndarray:
    """Coil sensitivity: anterior and posterior receive arrays, bright within a few cm of the body surface
    (subcutaneous fat there sets the top percentile, as on real cines), slowly varying elsewhere."""
    reach = rng.uniform(22, 32)
    g = (rng.uniform(0.35, 0.7) * np.exp(-np.clip(front - a, 0, None) / reach)
         + rng.uniform(0.15, 0.4) * np.exp(-np.clip(a - back, 0, None) / reach))
    g = np.log1p(g) + rng.uniform(-0.1, 0.1) * r / 100 + 0.06 * _smooth_noise(rng, (1, size, size), 25.0 / spacing)
    return np.exp(g - g[:, size // 2, size // 2].mean())


def _frame(tabs: dict, t: int, sel, layers: dict, p: dict, extra: dict, xs: np.ndarray, spacing: np.float32
           ) -> tuple[np.ndarray, np.ndarray]:
    """Labels (D', X, Y) and the noise-free image of frame t for slices `sel` of the tables `tabs`."""
    centre = tabs["centre"][sel, t]                                   # (D', 2)
    dx = xs[None, :, None] - centre[:, 0, None, None]                 # (D', X, 1)
    dy = xs[None, None, :] - centre[:, 1, None, None]                 # (D', 1, Y)
    dist = np.hypot(dx, dy)                                           # (D', X, Y)
    idx = ((np.arctan2(dy, dx) + np.float32(np.pi)) * np.float32(1 / D_THETA)).astype(np.int64) % N_THETA
    flat = idx.reshape(len(centre), -1)

    def at(tab):   # table (D', N_THETA) value at each pixel's angle: (D', X, Y)
        return np.take_along_axis(tab, flat, axis=1).reshape(dist.shape)

    r_endo = tabs["r_endo"][sel, t]
    s_endo, s_epi, depth = at(r_endo) - dist, at(tabs["r_epi"][sel, t]) - dist, at(tabs["tau"][sel, t])
    s_rv, has_rv = s_epi + depth, depth > 0
    rim = 2.5 * np.clip(depth / 2.0, 0, 1)                            # RV free wall, mm
    lab = np.zeros(dist.shape, np.uint8)
    lab[(s_rv > 0) & has_rv] = 1
    lab[s_epi > 0] = 2
    lab[s_endo > 0] = 3
    s_fat = s_rv + rim + extra["fat_mm"][idx]
    # The heart pushes its neighbours: lungs and liver stay a few mm outside its epicardial fat in every frame.
    img = _blend(layers["static"][sel], layers["organs"][sel] * _occupancy(-s_fat - 3.0, spacing),
                 layers["organ_signal"][sel])
    blood = extra["blood_tex"][sel]
    img = _blend(img, _occupancy(s_fat, spacing), SIGNAL["fat"])
    img = _blend(img, _occupancy(s_rv + rim, spacing) * has_rv, SIGNAL["muscle"])
    img = _blend(img, _occupancy(s_rv, spacing) * has_rv, p["rv_blood"] * blood)
    img = _blend(img, _occupancy(s_epi, spacing), SIGNAL["myo"])
    img = _blend(img, _occupancy(s_endo, spacing), blood)
    # Trabeculae: dark myocardial fingers a few mm into the cavity, deeper towards the apex.
    img = _blend(img, 0.6 * _occupancy(s_endo, spacing) * _occupancy(at(extra["trabeculae"][sel]) - s_endo,
                                                                      spacing), SIGNAL["myo"])
    # Papillary muscles: two discs on the free wall, inside the LV label as ACDC draws it.
    w = tabs["w"][sel, t]
    fade = np.clip(np.minimum(w - 0.15, 0.85 - w) / 0.1, 0, 1)         # (D',): mid-ventricular slices only
    for angle in p["papillary"]:
        theta = p["septum"] + angle
        i = int(((theta + np.pi) % (2 * np.pi)) / D_THETA) % N_THETA
        rad = p["papillary_mm"] * fade * (r_endo[:, i] > 2.5 * p["papillary_mm"])    # (D',)
        rho = r_endo[:, i] - 1.1 * rad
        px, py = centre[:, 0] + rho * np.cos(theta), centre[:, 1] + rho * np.sin(theta)
        sd = rad[:, None, None] - np.hypot(xs[None, :, None] - px[:, None, None], xs[None, None, :] - py[:, None, None])
        img = _blend(img, _occupancy(sd, spacing) * _occupancy(s_endo, spacing), SIGNAL["myo"])
    return lab, img


def render(p: dict, tables: dict, layers: dict, rng: np.random.Generator, size: int, spacing: float,
           outer: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise the beat: labels (T, D, X, Y) uint8 and the bSSFP-like image (T, D, X, Y) float32.

    outer: tables shifted a third of a slice outwards (`heart_tables(z_shift=...)`, base slice from the
    minus-shifted stack, apex slice from the plus-shifted one): the first and last slices average over
    their thickness, so the base and apex blur as a thick slice blurs them (through-plane partial volume).
    """
    # float32 throughout: half the memory traffic of float64, far below the noise in precision.
    tables, outer = (None if tab is None else {k: v.astype(np.float32) for k, v in tab.items() if k != "analytic_ml"}
                     for tab in (tables, outer))
    D, T, _ = tables["r_endo"].shape
    xs = ((np.arange(size) - (size - 1) / 2) * spacing).astype(np.float32)
    spacing = np.float32(spacing)
    extra = dict(
        fat_mm=np.clip(2.5 * _smooth_noise(rng, (1, 1, N_THETA), 8)[0, 0] + 1.0, 0, 4).astype(np.float32),
        blood_tex=(1 + 0.04 * _smooth_noise(rng, (D, size, size), 1.5)).astype(np.float32),
        trabeculae=(np.clip(_smooth_noise(rng, (D, 1, N_THETA), 2.5)[:, 0], 0, 2.5)          # mm into the cavity
                    * (1 + np.arange(D)[:, None] / max(D - 1, 1))).astype(np.float32),
    )
    labels = np.zeros((T, D, size, size), np.uint8)
    image = np.zeros((T, D, size, size), np.float32)
    ends = [0, D - 1]
    for t in range(T):
        labels[t], img = _frame(tables, t, slice(None), layers, p, extra, xs, spacing)
        if outer is not None:
            _, pv = _frame(outer, t, ends, layers, p, extra, xs, spacing)
            img[ends] = 0.6 * img[ends] + 0.4 * pv
        image[t] = gaussian_filter(img * layers["bias"], sigma=(0, 0.5, 0.5), truncate=2.0)   # point-spread blur
    sigma = np.float32(SIGNAL["blood"] / p["snr"])                          # SNR of the blood pool
    noisy = np.hypot(image + sigma * rng.standard_normal(image.shape, np.float32),
                     sigma * rng.standard_normal(image.shape, np.float32))   # Rician magnitude
    return labels, np.round(noisy * SCANNER_SCALE).astype(np.float32)


def insertion_points(tables: dict, p: dict, labels: np.ndarray, affine: np.ndarray, size: int, spacing: float
                     ) -> list[list[dict | None]]:
    """RV insertion points of every frame and slice: [t][z] = {"anterior": [x, y], "inferior": [x, y]} in voxel
    coordinates of the written image (x, y, slice z), or None on a slice whose labels hold no RV.

    The points are the ends of the RV crescent (septum +- rv_span) on the epicardium; they are named by RVIP_RULE.
    labels: (T, D, X, Y).
    """
    T, D = labels.shape[:2]
    has_rv = (labels == 1).any(axis=(2, 3))                                 # (T, D)
    idx = [int(((p["septum"] + sign * p["rv_span"] + np.pi) % (2 * np.pi)) / D_THETA) % N_THETA for sign in (-1, 1)]
    theta = THETA[idx]                                                      # (2,)
    r = tables["r_epi"][:, :, idx]                                          # (D, T, 2)
    xy = tables["centre"][:, :, None] + r[..., None] * np.stack([np.cos(theta), np.sin(theta)], -1)   # (D, T, 2, 2)
    vox = xy / spacing + (size - 1) / 2
    z = (affine[2, 0] * vox[..., 0] + affine[2, 1] * vox[..., 1]
         + affine[2, 2] * np.arange(D)[:, None, None])                     # world z up to the shared offset
    out = []
    for t in range(T):
        frame = []
        for k in range(D):
            if not has_rv[t, k]:
                frame.append(None)
                continue
            hi = int(np.argmax(z[k, t]))
            frame.append({name: [round(float(v), 2) for v in vox[k, t, j]]
                          for name, j in (("anterior", hi), ("inferior", 1 - hi))})
        out.append(frame)
    return out
