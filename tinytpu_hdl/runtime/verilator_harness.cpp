// Host-stream harness for the Verilated TPU, loaded by tinytpu_hdl/runtime/verilator.py with
// ctypes. One call moves a whole command packet in and its whole response packet out, so
// Python is crossed once per host command, not once per cycle.
#include <cstdint>
#include <memory>
#include "Vtinytpu.h"
#include "verilated.h"
#if VM_TRACE
#include "verilated_vcd_c.h"
#endif

// Verilator spells the "__" of Amaranth's port names as "___05F".
#define CMD_VALID host_cmd___05Fvalid
#define CMD_READY host_cmd___05Fready
#define CMD_PAYLOAD host_cmd___05Fpayload
#define RESP_VALID host_resp___05Fvalid
#define RESP_READY host_resp___05Fready
#define RESP_PAYLOAD host_resp___05Fpayload

struct Harness {
    std::unique_ptr<VerilatedContext> context;
    std::unique_ptr<Vtinytpu> top;
    uint64_t cycles = 0;
    int item_words[4] = {1, 1, 4, 1};
#if VM_TRACE
    std::unique_ptr<VerilatedVcdC> trace;
    uint64_t time = 0;
#endif
};

// One half cycle: the clock at `level`, the model evaluated, the trace (if any) dumped.
static void half(Harness *h, int level) {
    h->top->clk = level;
    h->top->eval();
#if VM_TRACE
    if (h->trace) h->trace->dump(h->time);
    h->time += 5;
#endif
}

static void tick(Harness *h) {
    half(h, 0);
    half(h, 1);
    h->cycles++;
}

extern "C" {

// seed >= 0: registers and memories without a reset start from values drawn from this seed
// (with a model built with --x-initial unique); seed < 0: they start at zero.
Harness *tpu_create(int ub_words, int acc_words, int imem_words, int csr_words, int seed) {
    Harness *h = new Harness;
    h->context.reset(new VerilatedContext);
    if (seed >= 0) {
        h->context->randReset(2);
        h->context->randSeed(seed);
    }
    h->top.reset(new Vtinytpu(h->context.get()));
    h->item_words[0] = ub_words;
    h->item_words[1] = acc_words;
    h->item_words[2] = imem_words;
    h->item_words[3] = csr_words;
    h->top->CMD_VALID = 0;
    h->top->RESP_READY = 1;
    h->top->rst = 1;
    tick(h);
    tick(h);
    h->top->rst = 0;
    h->cycles = 0;
    return h;
}

void tpu_destroy(Harness *h) {
    h->top->final();
#if VM_TRACE
    if (h->trace) h->trace->close();
#endif
    delete h;
}

// Start a VCD trace (a model built with --trace; returns 0 otherwise).
int tpu_trace_open(Harness *h, const char *path) {
#if VM_TRACE
    h->context->traceEverOn(true);
    h->trace.reset(new VerilatedVcdC);
    h->top->trace(h->trace.get(), 99);
    h->trace->open(path);
    return 1;
#else
    (void)h; (void)path;
    return 0;
#endif
}

uint64_t tpu_cycles(Harness *h) { return h->cycles; }

void tpu_idle(Harness *h, uint64_t cycles) {
    h->top->CMD_VALID = 0;
    h->top->RESP_READY = 1;
    for (uint64_t i = 0; i < cycles; i++) tick(h);
}

// Send n command words, return the number of response words written to out (-1: timeout,
// -2: out too small).
int64_t tpu_exchange(Harness *h, const uint32_t *in, int64_t n, uint32_t *out,
                     int64_t max_out, uint64_t timeout) {
    int64_t sent = 0, got = 0, expected = -1;
    uint64_t start = h->cycles;
    uint32_t command = n ? in[0] : 0;
    while (true) {
        h->top->CMD_VALID = sent < n;
        h->top->CMD_PAYLOAD = sent < n ? in[sent] : 0;
        h->top->RESP_READY = 1;
        half(h, 0);
        bool cmd_fire = h->top->CMD_VALID && h->top->CMD_READY;
        bool resp_fire = h->top->RESP_VALID;
        uint32_t word = h->top->RESP_PAYLOAD;
        half(h, 1);
        h->cycles++;
        if (cmd_fire) sent++;
        if (resp_fire) {
            if (got >= max_out) return -2;
            out[got++] = word;
            if (got == 1) {
                expected = 1;
                uint32_t status = (word >> 8) & 0xff, count = word >> 16;
                uint32_t space = (command >> 8) & 0xff;
                if ((word & 0xff) == 0x02 && status == 0 && space < 4)
                    expected += (int64_t)count * h->item_words[space];
            }
        }
        if (expected >= 0 && got >= expected && sent >= n) {
            h->top->CMD_VALID = 0;
            return got;
        }
        if (h->cycles - start > timeout) return -1;
    }
}

}
