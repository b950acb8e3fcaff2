#!/usr/bin/python3
# trainer_torch_replay.py: issue 11's replay check. A 784-32-10 tanh MLP is initialized in
# PyTorch (float64, torch's default init), its weights are written as a safetensors checkpoint,
# and 200 steps of full-batch gradient descent (mse, lr 0.1, the first 500 Fashion-MNIST
# training images, uncentered) run in PyTorch and in tdlab (kind eos, data.center false,
# params.init_from {"checkpoint": 1} through `tdlab run --checkpoint-dir`). Passes when the loss
# curves agree to a relative 1e-9 at every step (measured: 2.6e-14).
# Usage: /usr/bin/python3 tests/trainer_torch_replay.py [build/tdlab]
import torch, gzip, numpy as np, json, subprocess, os, math, sys, tempfile
TDLAB = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build/tdlab")
DIR = tempfile.mkdtemp(prefix="tdlab_replay_")
os.makedirs(os.path.join(DIR, "checkpoints"))
os.chdir(DIR)
import struct
def save_file(sd,path,metadata):
    hdr={"__metadata__":metadata}; off=0; blobs=[]
    for k,v in sd.items():
        b=v.numpy().astype('<f8').tobytes(); hdr[k]={"dtype":"F64","shape":list(v.shape),"data_offsets":[off,off+len(b)]}; off+=len(b); blobs.append(b)
    h=json.dumps(hdr).encode(); h+=b' '*((8-len(h)%8)%8)
    open(path,'wb').write(struct.pack('<Q',len(h))+h+b''.join(blobs))
torch.manual_seed(0)
N=500
raw=gzip.open(os.path.join(os.environ.get('TDLAB_DATA_DIR','/usr/share/datasets/fashion-mnist'),'train-images-idx3-ubyte.gz')).read()
X=np.frombuffer(raw,dtype=np.uint8,offset=16)[:N*784].reshape(N,784).astype(np.float64)/255.0
lab=gzip.open(os.path.join(os.environ.get('TDLAB_DATA_DIR','/usr/share/datasets/fashion-mnist'),'train-labels-idx1-ubyte.gz')).read()
y=np.frombuffer(lab,dtype=np.uint8,offset=8)[:N].astype(np.int64)
X=torch.tensor(X); y=torch.tensor(y)
layers=torch.nn.ModuleList([torch.nn.Linear(784,32),torch.nn.Linear(32,10)]).double()
sd={f"layers.{i}.{k}":v.detach().clone().contiguous() for i,l in enumerate(layers) for k,v in l.state_dict().items()}
save_file(sd,'checkpoints/1.safetensors',metadata={"format":"pt","activation":"tanh"})
Y=torch.nn.functional.one_hot(y,10).double()
lr=0.1; losses=[]
opt=torch.optim.SGD(layers.parameters(),lr=lr)
for t in range(201):
    z=layers[1](torch.tanh(layers[0](X)))
    loss=0.5*((z-Y)**2).sum(1).mean()
    losses.append(loss.item())
    if t==200: break
    opt.zero_grad(); loss.backward(); opt.step()
spec={"kind":"eos","params":{"data":{"n_train":N,"n_test":100,"center":False},"model":{"hidden":[32],"activation":"tanh"},"loss":"mse","lr":lr,"steps":200,"analyze_every":1000,"init_from":{"checkpoint":1}}}
json.dump(spec,open('spec.json','w'))
out=subprocess.run([TDLAB,'run','spec.json','--checkpoint-dir',DIR],capture_output=True,text=True,env=dict(os.environ,OPENBLAS_NUM_THREADS='1'))
tl={}
for l in out.stdout.splitlines():
    d=json.loads(l)
    if d.get('key')=='train_loss': tl[d['step']]=d['value']
    if 'status' in d: print(d['status'], d['error'])
rel=max(abs(tl[t]-losses[t])/losses[t] for t in range(201))
print("steps",len(tl),"max rel diff",rel, "loss0",losses[0],tl[0],"loss200",losses[200],tl[200])
ok = len(tl) == 201 and rel < 1e-9
print("ok" if ok else "FAIL", "- tdlab's full-batch GD from PyTorch's weights follows PyTorch's loss curve (rel 1e-9)")
sys.exit(0 if ok else 1)
