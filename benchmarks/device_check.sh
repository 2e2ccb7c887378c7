#!/usr/bin/env bash
# A GPU check that anyone can run, on a machine with one NVIDIA GPU and nothing downloaded but
# PyPI packages, in under 10 minutes:
#   1. installs what is missing (TensorFlow with CUDA, the package, ONNX tooling);
#   2. builds a 256 px subset of the built-in sample, its JPEGs as heavy as real illustrations;
#   3. trains the thesis model two epochs under the automatic settings (mixed precision + XLA)
#      and two epochs in float32 without XLA;
#   4. exports the first run to ONNX and checks it against Keras;
#   5. prints img/s, the mixed-precision + XLA speed-up over float32, the model FLOP
#      utilisation and the input-wait share (`animetag bench train`).
# Any error stops it with a non-zero exit.
#
#   bash benchmarks/device_check.sh [work-folder]      (default: build/device-check)
#
# On a machine with JAX but no TensorFlow and no package index, first `make wheels` here and
# carry build/wheels along, then run
#   DEVICE_CHECK_BACKEND=jax bash benchmarks/device_check.sh
# for the real chain under Keras' JAX backend: sample -> subset -> train -> evaluate -> tag at
# 256 px, then img/s, MFU, input efficiency and val F1 (`animetag bench train`).
# (benchmarks/step_rate.py times the bare training step alone.)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WORK=${1:-build/device-check}
IMAGES=${DEVICE_CHECK_IMAGES:-2400}
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
start=$(date +%s)
step() { echo; echo "== $* ($(( $(date +%s) - start )) s)"; }

step "GPU"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no NVIDIA GPU found"

if [ "${DEVICE_CHECK_BACKEND:-tensorflow}" = jax ]; then
    # JAX and no TensorFlow, no package index: the package and its pure-Python needs come from
    # the wheels `make wheels` wrote (carried here in build/wheels)
    export KERAS_BACKEND=jax
    SIZE=${DEVICE_CHECK_SIZE:-256}
    WHEELS=${DEVICE_CHECK_WHEELS:-build/wheels}
    step "install from $WHEELS (no index)"
    if ! "$PY" -c "import animetag" 2>/dev/null; then
        # every wheel there, as it is: what the machine has already (NumPy, SciPy, Pillow) stays
        "$PY" -m pip install -q --no-index --no-deps "$WHEELS"/*.whl
        "$PY" -m pip check | grep -v -i tensorboard || true  # anything else missing or too old shows here
    fi
    "$PY" -c "import jax, keras; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__)"
    if "$PY" -c "import tensorflow" 2>/dev/null; then echo "(TensorFlow is installed here; the JAX backend does not use it)"; fi
    rm -rf "$WORK" && mkdir -p "$WORK"
    step "sample -> subset: $IMAGES detailed posts at $SIZE px"
    "$PY" -m animetag.cli sample "$WORK/sample" --images "$IMAGES" --clean --detail
    "$PY" -m animetag.cli subset --metadata "$WORK/sample/metadata/posts.json" --images-root "$WORK/sample" \
        --out "$WORK/subset" --profile full --image-size "$SIZE"
    step "train the thesis model ${DEVICE_CHECK_EPOCHS:-3} epochs under JAX (precision from the accelerator)"
    "$PY" -m animetag.cli train --data "$WORK/subset" --run "$WORK/run" --profile full \
        --epochs "${DEVICE_CHECK_EPOCHS:-3}" ${DEVICE_CHECK_TRAIN_ARGS:-} | tee "$WORK/train.json"
    step "evaluate and tag"
    "$PY" -m animetag.cli evaluate --data "$WORK/subset" --run "$WORK/run" --bootstrap 200 > "$WORK/evaluate.txt"
    tail -n 1 "$WORK/evaluate.txt"
    "$PY" -m animetag.cli tag --run "$WORK/run" "$WORK/sample/512px" --format csv --out "$WORK/tags" | tail -n 1
    step "benchmark: host feed, fed and in-memory step (input efficiency), MFU"
    "$PY" -m animetag.cli bench train --data "$WORK/subset" --profile full --image-size "$SIZE" \
        ${DEVICE_CHECK_BENCH_ARGS:-} | tee "$WORK/bench.json"
    "$PY" - "$WORK" <<'PYEOF'
import json, sys
work = sys.argv[1]
def last_json(path):  # the command's summary, after Keras' progress lines
    text = open(path).read()
    return json.loads(text[text.rfind("\n{") + 1:] if not text.startswith("{") else text)
b, t = last_json(f"{work}/bench.json"), last_json(f"{work}/train.json")
print(f"device / backend             {b['device']} / {b['backend']}, {b['precision']}")
print(f"training step (in memory)    {b['step_img_s']} img/s; fed from the shards {b['fit_img_s']} img/s")
print(f"model FLOP utilisation       {b.get('model_flop_utilisation')} (goal >= 0.22)")
print(f"input efficiency             {b['input_efficiency']} (goal >= 0.9); input-wait share {b['input_wait_share']}")
print(f"host feed (cached, uint8)    {b['host_feed_img_s']} img/s; first pass (decoding) {b['first_pass_decode_img_s']}")
print(f"val F1-micro / F1-macro      {t['val_f1_micro']:.3f} / {t['val_f1_macro']:.3f} after {t['epochs_done']} epochs "
      f"({t['seconds']} s)")
PYEOF
    echo "device_check (jax): all steps passed in $(( $(date +%s) - start )) s"
    exit 0
fi

step "install what is missing"
if ! "$PY" -c "import tensorflow as tf, sys; sys.exit(0 if tf.config.list_physical_devices('GPU') else 1)" 2>/dev/null; then
    "$PY" -m pip install -q "tensorflow[and-cuda]>=2.16"
fi
"$PY" -m pip install -q -r requirements.txt "tf2onnx>=1.16" "onnxruntime>=1.17"
"$PY" -m pip install -q --no-deps -e .
"$PY" - <<'PYEOF'
import tensorflow as tf, keras
gpus = tf.config.list_physical_devices("GPU")
print("tensorflow", tf.__version__, "keras", keras.__version__, "GPUs", len(gpus))
if not gpus:
    raise SystemExit("device_check: TensorFlow sees no GPU (CUDA libraries missing?)")
PYEOF

rm -rf "$WORK"
mkdir -p "$WORK"
step "a 256 px subset of $IMAGES detailed sample posts"
"$PY" -m animetag.cli sample "$WORK/sample" --images "$IMAGES" --clean --detail
"$PY" -m animetag.cli subset --metadata "$WORK/sample/metadata/posts.json" --images-root "$WORK/sample" \
    --out "$WORK/subset" --profile full --image-size 256

step "train 2 epochs, automatic precision and XLA"
"$PY" -m animetag.cli train --data "$WORK/subset" --run "$WORK/run-auto" --profile full --epochs 2 | tee "$WORK/auto.json"
step "train 2 epochs, float32 without XLA"
"$PY" -m animetag.cli train --data "$WORK/subset" --run "$WORK/run-f32" --profile full --epochs 2 \
    --precision float32 --xla off | tee "$WORK/f32.json"

step "export to ONNX and compare with Keras"
"$PY" -m animetag.cli export --run "$WORK/run-auto" --out "$WORK/export" --channel-order rgb
"$PY" - "$WORK" <<'PYEOF'
import json, sys
import numpy as np, keras, onnxruntime as ort
work = sys.argv[1]
for name in ("auto", "f32"):
    r = json.load(open(f"{work}/{name}.json"))
    if not (np.isfinite(r["val_f1_micro"]) and r["epochs_done"] == 2):
        raise SystemExit(f"device_check: the {name} run did not finish cleanly: {r}")
x = np.random.default_rng(0).integers(0, 256, size=(8, 256, 256, 3)).astype("float32")
want = np.asarray(keras.saving.load_model(f"{work}/run-auto/model.keras")(x, training=False))
sess = ort.InferenceSession(f"{work}/export/model.onnx", providers=["CPUExecutionProvider"])
got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
gap = float(np.abs(got - want).max())
print(f"ONNX against Keras: largest score difference {gap:.2e}")
if gap > 1e-4:
    raise SystemExit("device_check: the ONNX export disagrees with model.keras")
PYEOF

step "benchmark: host feed, fed and in-memory step, float32 against mixed precision + XLA"
"$PY" -m animetag.cli bench train --data "$WORK/subset" --profile full --fit-steps 30 | tee "$WORK/bench.json"

step "summary"
"$PY" - "$WORK" <<'PYEOF'
import json, sys
work = sys.argv[1]
b = json.load(open(f"{work}/bench.json"))
auto, f32 = (json.load(open(f"{work}/{n}.json")) for n in ("auto", "f32"))
print(f"device                      {b['device']}")
print(f"training step, {b['precision']} + XLA   {b['step_img_s']} img/s (fed from the pipeline: {b['fit_img_s']})")
print(f"training step, float32       {b.get('float32_step_img_s')} img/s")
print(f"mixed + XLA over float32     {b.get('speedup_over_float32')}x")
print(f"model FLOP utilisation       {b.get('model_flop_utilisation')}")
print(f"input-wait share             {b['input_wait_share']}")
print(f"host feed (cached, uint8)    {b['host_feed_img_s']} img/s; first pass (decoding) {b['first_pass_decode_img_s']}")
print(f"2-epoch runs                 auto {auto['seconds']} s, float32 {f32['seconds']} s (compile and validation included)")
PYEOF
echo "device_check: all steps passed in $(( $(date +%s) - start )) s"
