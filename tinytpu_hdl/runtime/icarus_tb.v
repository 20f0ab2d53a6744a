// Host-stream testbench for the TPU's Verilog under Icarus Verilog, driven by
// tinytpu_hdl/runtime/icarus.py through two named pipes (+IN=path, +OUT=path). It is
// plain Verilog-2005 and runs the same in every Icarus language mode.
//
// Requests (text, one per line, hexadecimal numbers):
//   X n w1 .. wn   send one command packet; answered "R k w1 .. wk" with its response
//   I c            let the device run c cycles (no answer)
//   Q              finish
// Inputs change after the falling edge and outputs are sampled just before the rising
// edge, cycle for cycle as the Verilator harness does.
`timescale 1ns / 1ps
module tinytpu_tb;
  parameter UB_WORDS = 1, ACC_WORDS = 1, IMEM_WORDS = 4, CSR_WORDS = 1;
  parameter MAX_WORDS = 1 << 19;

  reg clk = 1'b0;
  reg rst = 1'b1;
  reg cmd_valid = 1'b0;
  reg [31:0] cmd_payload = 32'h0;
  reg resp_ready = 1'b1;
  wire cmd_ready, resp_valid, running, done, error;
  wire [31:0] resp_payload;

  tinytpu dut (
    .clk(clk), .rst(rst),
    .host_cmd__valid(cmd_valid), .host_cmd__payload(cmd_payload),
    .host_cmd__ready(cmd_ready),
    .host_resp__valid(resp_valid), .host_resp__payload(resp_payload),
    .host_resp__ready(resp_ready),
    .running(running), .done(done), .error(error));

  reg [31:0] words [0:MAX_WORDS - 1];
  reg [31:0] out [0:MAX_WORDS - 1];
  reg [1023:0] in_path, out_path;
  integer fin, fout, r, n, i, sent, got, expected, cycles, space;
  reg [7:0] op;
  reg cmd_fire, resp_fire;
  reg [31:0] word;

  task cycle;
    begin
      #4;
      cmd_fire = cmd_valid & cmd_ready;
      resp_fire = resp_valid;
      word = resp_payload;
      #1 clk = 1'b1;
      #5 clk = 1'b0;
      cycles = cycles + 1;
    end
  endtask

  function integer item_words(input integer s);
    begin
      case (s)
        0: item_words = UB_WORDS;
        1: item_words = ACC_WORDS;
        2: item_words = IMEM_WORDS;
        default: item_words = CSR_WORDS;
      endcase
    end
  endfunction

  initial begin
    if (!$value$plusargs("IN=%s", in_path) || !$value$plusargs("OUT=%s", out_path)) begin
      $display("tinytpu_tb: needs +IN=path and +OUT=path");
      $finish;
    end
    fin = $fopen(in_path, "r");
    fout = $fopen(out_path, "w");
    cycles = 0;
    cycle;
    cycle;
    rst = 1'b0;
    forever begin
      r = $fscanf(fin, " %c", op);
      if (r != 1 || op == "Q") begin
        $fclose(fout);
        $finish;
      end else if (op == "I") begin
        r = $fscanf(fin, "%h", n);
        cmd_valid = 1'b0;
        for (i = 0; i < n; i = i + 1) cycle;
      end else if (op == "X") begin
        r = $fscanf(fin, "%h", n);
        for (i = 0; i < n; i = i + 1) r = $fscanf(fin, "%h", words[i]);
        sent = 0;
        got = 0;
        expected = -1;
        while (expected < 0 || got < expected || sent < n) begin
          cmd_valid = sent < n;
          cmd_payload = sent < n ? words[sent] : 32'h0;
          cycle;
          if (cmd_fire) sent = sent + 1;
          if (resp_fire) begin
            out[got] = word;
            got = got + 1;
            if (got == 1) begin
              expected = 1;
              space = (words[0] >> 8) & 8'hff;
              if ((word & 8'hff) == 8'h02 && ((word >> 8) & 8'hff) == 0 && space < 4)
                expected = 1 + (word >> 16) * item_words(space);
            end
          end
        end
        cmd_valid = 1'b0;
        $fwrite(fout, "R %0h", got);
        for (i = 0; i < got; i = i + 1) $fwrite(fout, " %0h", out[i]);
        $fwrite(fout, "\n");
        $fflush(fout);
      end
    end
  end
endmodule
