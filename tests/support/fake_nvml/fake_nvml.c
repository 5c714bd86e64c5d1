/*
 * A fake libnvidia-ml.so.1 for tests: the real pynvml loads it (CDLL("libnvidia-ml.so.1") through
 * LD_LIBRARY_PATH) and reads these numbers as if from GPUs. Only the symbols and struct layouts the
 * monitor's pynvml calls use are here (checked against the installed pynvml.py); any other symbol
 * is missing, which pynvml reports as NVMLError_FunctionNotFound.
 *
 * Environment:
 *   FAKE_NVML_GPU_COUNT  number of GPUs (default 2, at most 64)
 *   FAKE_NVML_INIT_ERROR an nvmlReturn_t for nvmlInitWithFlags to fail with (e.g. 9, driver not loaded)
 *   FAKE_NVML_LOST_GPU   index of a GPU whose memory reading fails with NVML_ERROR_GPU_IS_LOST
 *
 * GPU i (the tests compute the same numbers, see tests/support/fake_nvml/__init__.py):
 *   name      even i: "NVIDIA Fake A100 80GB", odd i: "NVIDIA Fake RTX 4090"
 *   uuid      "GPU-fake-0000-000i" (i on 4 digits)
 *   memory    total even 81920 MiB, odd 24564 MiB; used (4096 + 1024 i) MiB; free = total - used
 *   util      gpu (10 i + 7) % 101 percent, memory 3 percent
 *   temp      40 + i C
 *   power     even i: 250000 + 1000 i mW; odd i: NVML_ERROR_NOT_SUPPORTED
 *   processes GPU 0: pid 4242 using 3072 MiB, pid 4343 with unknown usage; others: none
 *   MIG mode  NVML_ERROR_NOT_SUPPORTED
 */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>

#define NVML_SUCCESS 0
#define NVML_ERROR_UNINITIALIZED 1
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_ERROR_GPU_IS_LOST 15
#define MAX_GPUS 64
#define MIB 1048576ULL

typedef struct { unsigned int index; } fake_device;
typedef fake_device *nvmlDevice_t;

/* Layouts as pynvml's ctypes structures declare them. */
typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;
typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlProcessInfo_t;

static fake_device devices[MAX_GPUS];
static int initialised = 0;

static int env_int(const char *name, int fallback) {
    const char *value = getenv(name);
    return value && *value ? atoi(value) : fallback;
}

static unsigned int gpu_count(void) {
    int n = env_int("FAKE_NVML_GPU_COUNT", 2);
    return (unsigned int)(n < 0 ? 0 : n > MAX_GPUS ? MAX_GPUS : n);
}

static int check(nvmlDevice_t device) {
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    if (device == NULL || device->index >= gpu_count()) return NVML_ERROR_INVALID_ARGUMENT;
    return NVML_SUCCESS;
}

static int copy_text(const char *text, char *out, unsigned int length) {
    if (out == NULL || strlen(text) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    strcpy(out, text);
    return NVML_SUCCESS;
}

int nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    int error = env_int("FAKE_NVML_INIT_ERROR", 0);
    if (error) return error;
    for (unsigned int i = 0; i < MAX_GPUS; i++) devices[i].index = i;
    initialised = 1;
    return NVML_SUCCESS;
}

int nvmlInit_v2(void) { return nvmlInitWithFlags(0); }

int nvmlShutdown(void) {
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    initialised = 0;
    return NVML_SUCCESS;
}

const char *nvmlErrorString(int result) {
    static char text[64];
    snprintf(text, sizeof text, "fake NVML error %d", result);
    return text;
}

int nvmlDeviceGetCount_v2(unsigned int *count) {
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    *count = gpu_count();
    return NVML_SUCCESS;
}

int nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    if (!initialised) return NVML_ERROR_UNINITIALIZED;
    if (index >= gpu_count()) return NVML_ERROR_INVALID_ARGUMENT;
    *device = &devices[index];
    return NVML_SUCCESS;
}

int nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    int rc = check(device);
    if (rc) return rc;
    return copy_text(device->index % 2 ? "NVIDIA Fake RTX 4090" : "NVIDIA Fake A100 80GB", name, length);
}

int nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    int rc = check(device);
    if (rc) return rc;
    char text[32];
    snprintf(text, sizeof text, "GPU-fake-0000-%04u", device->index);
    return copy_text(text, uuid, length);
}

int nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    int rc = check(device);
    if (rc) return rc;
    if ((int)device->index == env_int("FAKE_NVML_LOST_GPU", -1)) return NVML_ERROR_GPU_IS_LOST;
    memory->total = (device->index % 2 ? 24564ULL : 81920ULL) * MIB;
    memory->used = (4096ULL + 1024ULL * device->index) * MIB;
    memory->free = memory->total - memory->used;
    return NVML_SUCCESS;
}

int nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *util) {
    int rc = check(device);
    if (rc) return rc;
    util->gpu = (10 * device->index + 7) % 101;
    util->memory = 3;
    return NVML_SUCCESS;
}

int nvmlDeviceGetTemperature(nvmlDevice_t device, int sensor, unsigned int *temp) {
    int rc = check(device);
    if (rc) return rc;
    if (sensor != 0) return NVML_ERROR_NOT_SUPPORTED;
    *temp = 40 + device->index;
    return NVML_SUCCESS;
}

int nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *milliwatts) {
    int rc = check(device);
    if (rc) return rc;
    if (device->index % 2) return NVML_ERROR_NOT_SUPPORTED;
    *milliwatts = 250000 + 1000 * device->index;
    return NVML_SUCCESS;
}

/* The NVML contract pynvml relies on: with too small a buffer, say how many and fail with
   INSUFFICIENT_SIZE; with none running, succeed with a count of 0. */
int nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device, unsigned int *count, nvmlProcessInfo_t *infos) {
    int rc = check(device);
    if (rc) return rc;
    unsigned int running = device->index == 0 ? 2 : 0;
    if (infos == NULL || *count < running) {
        *count = running;
        return running ? NVML_ERROR_INSUFFICIENT_SIZE : NVML_SUCCESS;
    }
    if (running) {
        infos[0] = (nvmlProcessInfo_t){4242, 3072ULL * MIB, 0xFFFFFFFFu, 0xFFFFFFFFu};
        infos[1] = (nvmlProcessInfo_t){4343, ~0ULL, 0xFFFFFFFFu, 0xFFFFFFFFu};  /* usage unknown */
    }
    *count = running;
    return NVML_SUCCESS;
}

int nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *current, unsigned int *pending) {
    (void)current;
    (void)pending;
    int rc = check(device);
    return rc ? rc : NVML_ERROR_NOT_SUPPORTED;
}
