// An emulated Raspberry Pi Pico (rp2040js) whose USB CDC serial port is this process's
// stdin and stdout, for tests/test_rp2sim.py:
//
//     RBNN_RP2040JS=<folder with node_modules/rp2040js> node rp2sim.cjs FIRMWARE.uf2 BOOTROM
//
// BOOTROM is the RP2040's B1 bootrom: a 16 kB binary, or rp2040js's demo/bootrom.ts.
// What is known to work with rp2040js 1.4.1 (docs/FIRMWARE.md): the UF2 goes into flash
// and the core starts at 0x10000000 (boot stage 2; the bootrom's own reset path hangs
// early, but the image calls into the bootrom's functions, so it is loaded). Bytes to
// the board go through rp2040js's 512-byte USB FIFO, which drops what does not fit: they
// are fed only as far as it has room (the board takes them as its buffers allow, which
// is USB's flow control), checked every PACE_CYCLES simulated cycles. Nothing but the
// board's serial output goes to stdout; notes go to stderr.
'use strict';

const fs = require('fs');
const path = require('path');

const where = process.env.RBNN_RP2040JS || '.';
const pkg = fs.existsSync(path.join(where, 'node_modules', 'rp2040js'))
  ? path.join(where, 'node_modules', 'rp2040js')
  : where;
const { Simulator, USBCDC, ConsoleLogger, LogLevel } = require(pkg);

const [uf2Path, bootromPath] = process.argv.slice(2);
if (!uf2Path || !bootromPath) {
  process.stderr.write('usage: node rp2sim.cjs FIRMWARE.uf2 BOOTROM\n');
  process.exit(2);
}

const FLASH_START = 0x10000000;
const PACE_CYCLES = 20000; // top up the USB FIFO this often (simulated cycles)
const CLOCK_HZ = 125e6;

function bootrom(file) {
  const data = fs.readFileSync(file);
  if (file.endsWith('.ts') || file.endsWith('.js')) {
    const words = data.toString().match(/0x[0-9a-fA-F]{8}/g) || [];
    return Uint32Array.from(words, (w) => parseInt(w, 16));
  }
  return new Uint32Array(data.buffer, data.byteOffset, data.length >> 2);
}

function loadUF2(file, mcu) {
  const data = fs.readFileSync(file);
  for (let at = 0; at + 512 <= data.length; at += 512) {
    const flags = data.readUInt32LE(at + 8);
    const addr = data.readUInt32LE(at + 12);
    const size = data.readUInt32LE(at + 16);
    if (flags & 1) continue; // not for the main flash
    mcu.flash.set(data.subarray(at + 32, at + 32 + size), addr - FLASH_START);
  }
}

const sim = new Simulator();
const mcu = sim.rp2040;
mcu.logger = new ConsoleLogger(LogLevel.Error);
const rom = bootrom(bootromPath);
if (rom.length !== 4096) {
  process.stderr.write(`rp2sim: ${bootromPath}: expected a 16 kB bootrom, found ${rom.length * 4} bytes\n`);
  process.exit(2);
}
mcu.loadBootrom(rom);
loadUF2(uf2Path, mcu);

const cdc = new USBCDC(mcu.usbCtrl);
const inbox = [];
let connected = false;
cdc.onDeviceConnected = () => {
  connected = true;
  process.stderr.write('rp2sim: USB CDC connected\n');
};
cdc.onSerialData = (value) => process.stdout.write(Buffer.from(value));

const feed = sim.clock.createAlarm(() => {
  const fifo = cdc.txFIFO;
  const n = connected ? Math.min(inbox.length, fifo.size - fifo.itemCount) : 0;
  for (const b of inbox.splice(0, n)) cdc.sendSerialByte(b);
  feed.schedule((PACE_CYCLES * 1e9) / CLOCK_HZ);
});
feed.schedule((PACE_CYCLES * 1e9) / CLOCK_HZ);

process.stdin.on('data', (chunk) => {
  for (const b of chunk) inbox.push(b);
});
process.stdin.on('end', () => process.exit(0)); // the test is done

mcu.core.PC = FLASH_START;
sim.execute();
